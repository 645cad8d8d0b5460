/* wordcount map|reduce [TOP]
 *
 *   map     input: text. Output: one line "WORD<TAB>COUNT" per distinct word, sorted by word. A
 *           word is a maximal run of ASCII letters (and apostrophes inside a word), lowercased.
 *   reduce  inputs: outputs of map (or of reduce). Output: the merged counts, sorted by word; with
 *           TOP, only the TOP most frequent words, by count descending then word.
 */
#include <ctype.h>
#include "shoal_task.h"

typedef struct {
    char *word;
    long long count;
} entry;

typedef struct {
    entry *slots;
    size_t cap, len;
} table;

static uint64_t hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static void add(table *t, const char *w, size_t n, long long c);

static void grow(table *t) {
    table nt = {calloc(t->cap * 2, sizeof(entry)), t->cap * 2, 0};
    if (!nt.slots) shoal_die("out of memory");
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].word) {
            size_t j = hash(t->slots[i].word, strlen(t->slots[i].word)) & (nt.cap - 1);
            while (nt.slots[j].word) j = (j + 1) & (nt.cap - 1);
            nt.slots[j] = t->slots[i];
            nt.len++;
        }
    free(t->slots);
    *t = nt;
}

static void add(table *t, const char *w, size_t n, long long c) {
    if ((t->len + 1) * 2 > t->cap) grow(t);
    size_t j = hash(w, n) & (t->cap - 1);
    while (t->slots[j].word) {
        if (strlen(t->slots[j].word) == n && !memcmp(t->slots[j].word, w, n)) {
            t->slots[j].count += c;
            return;
        }
        j = (j + 1) & (t->cap - 1);
    }
    char *copy = malloc(n + 1);
    if (!copy) shoal_die("out of memory");
    memcpy(copy, w, n);
    copy[n] = 0;
    t->slots[j].word = copy;
    t->slots[j].count = c;
    t->len++;
}

static int by_word(const void *a, const void *b) {
    return strcmp(((const entry *)a)->word, ((const entry *)b)->word);
}

static int by_count(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return strcmp(x->word, y->word);
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "map") && strcmp(argv[1], "reduce")))
        shoal_die("usage: wordcount map|reduce [TOP]");
    int map = !strcmp(argv[1], "map");
    long long top = argc > 2 ? shoal_arg_ll(argc, argv, 2, "top") : -1;
    table t = {calloc(1024, sizeof(entry)), 1024, 0};
    if (!t.slots) shoal_die("out of memory");
    shoal_inputs in = shoal_read_inputs();
    char word[256];
    for (size_t k = 0; k < in.count; k++) {
        const unsigned char *p = in.items[k].data, *end = p + in.items[k].len;
        if (map) {
            while (p < end) {
                while (p < end && !isalpha(*p)) p++;
                size_t n = 0;
                while (p < end && (isalpha(*p) || (*p == '\'' && p + 1 < end && isalpha(p[1]) && n > 0))) {
                    if (n < sizeof word) word[n] = (char)tolower(*p);
                    n++;
                    p++;
                }
                if (n > 0) add(&t, word, n < sizeof word ? n : sizeof word, 1);
            }
        } else {
            while (p < end) {
                const unsigned char *tab = memchr(p, '\t', (size_t)(end - p));
                const unsigned char *nl = tab ? memchr(tab, '\n', (size_t)(end - tab)) : NULL;
                if (!tab || !nl) {
                    fprintf(stderr, "input %zu: expected lines of WORD<TAB>COUNT\n", k);
                    return 2;
                }
                long long c = 0;
                for (const unsigned char *q = tab + 1; q < nl; q++) {
                    if (!isdigit(*q)) {
                        fprintf(stderr, "input %zu: bad count\n", k);
                        return 2;
                    }
                    c = c * 10 + (*q - '0');
                }
                add(&t, (const char *)p, (size_t)(tab - p), c);
                p = nl + 1;
            }
        }
    }
    entry *all = malloc((t.len + 1) * sizeof(entry));
    if (!all) shoal_die("out of memory");
    size_t n = 0;
    for (size_t i = 0; i < t.cap; i++)
        if (t.slots[i].word) all[n++] = t.slots[i];
    qsort(all, n, sizeof(entry), top >= 0 ? by_count : by_word);
    if (top >= 0 && (size_t)top < n) n = (size_t)top;
    for (size_t i = 0; i < n; i++) printf("%s\t%lld\n", all[i].word, all[i].count);
    return 0;
}

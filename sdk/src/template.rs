//! Job-file templates: `for` clauses (`"y in 0..4, x in 0..4"`) and `{expr}` placeholders.
//!
//! A placeholder is integer arithmetic (`+ - * / %`, parentheses, unary minus) over the loop
//! variables in scope; `{{` and `}}` stand for literal braces. Everything is `i64` and checked:
//! overflow and division by zero are errors, never a wrap or a panic.

use std::collections::HashMap;

/// Loop variables in scope and their current values.
pub(crate) type Vars = HashMap<String, i64>;

/// One clause of a `for`: a variable and its half-open range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loop {
    pub(crate) var: String,
    pub(crate) start: i64,
    pub(crate) end: i64,
}

/// The most combinations one `for` may produce (a typo guard, not a scheduler limit).
const MAX_COMBINATIONS: u64 = 1 << 20;

/// Parses `"VAR in A..B, VAR in A..B"` (outermost loop first).
pub(crate) fn parse_for(text: &str) -> Result<Vec<Loop>, String> {
    let mut loops: Vec<Loop> = Vec::new();
    let mut total: u64 = 1;
    for clause in text.split(',') {
        let clause = clause.trim();
        let (var, range) = clause
            .split_once(" in ")
            .ok_or_else(|| format!("expected `VAR in START..END`, got {clause:?}"))?;
        let var = var.trim();
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("{var:?} is not a variable name (letters, digits, _)"));
        }
        if var.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("{var:?} is not a variable name (it starts with a digit)"));
        }
        if loops.iter().any(|l| l.var == var) {
            return Err(format!("variable {var:?} appears twice"));
        }
        let (a, b) = range
            .trim()
            .split_once("..")
            .ok_or_else(|| format!("expected a range START..END after `{var} in`, got {range:?}"))?;
        let bound = |s: &str| {
            s.trim().parse::<i64>().map_err(|_| format!("range bound {:?} is not an integer", s.trim()))
        };
        let (start, end) = (bound(a)?, bound(b)?);
        if end < start {
            return Err(format!("range {start}..{end} runs backwards"));
        }
        total = total.saturating_mul(end.abs_diff(start));
        if total > MAX_COMBINATIONS {
            return Err(format!("more than {MAX_COMBINATIONS} combinations"));
        }
        loops.push(Loop { var: var.to_owned(), start, end });
    }
    Ok(loops)
}

/// Every assignment of the loops' variables, outermost loop slowest, each on top of `base`.
pub(crate) fn combinations(loops: &[Loop], base: &Vars) -> Vec<Vars> {
    let mut out = vec![base.clone()];
    for l in loops {
        out = out
            .into_iter()
            .flat_map(|vars| {
                (l.start..l.end).map(move |v| {
                    let mut vars = vars.clone();
                    vars.insert(l.var.clone(), v);
                    vars
                })
            })
            .collect();
    }
    out
}

/// Replaces every `{expr}` in `text` by its value under `vars`.
pub(crate) fn expand(text: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('}') {
            return Err("unmatched `}` (write `}}` for a literal brace)".into());
        } else {
            let end = tail.find('}').ok_or("unclosed `{` (write `{{` for a literal brace)")?;
            out.push_str(&eval(&tail[1..end], vars)?.to_string());
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Evaluates one placeholder's expression.
fn eval(expr: &str, vars: &Vars) -> Result<i64, String> {
    let tokens = tokenize(expr)?;
    let mut p = Parser { tokens: &tokens, pos: 0, vars, expr };
    let v = p.sum()?;
    if p.pos != tokens.len() {
        return Err(format!("unexpected {:?} in {{{expr}}}", tokens[p.pos]));
    }
    Ok(v)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Num(i64),
    Var(String),
    Op(char),
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if "+-*/%()".contains(c) {
            tokens.push(Token::Op(c));
            chars.next();
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut j = i;
            while let Some(&(k, d)) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_') {
                    break;
                }
                j = k + d.len_utf8();
                chars.next();
            }
            let word = &expr[i..j];
            tokens.push(if c.is_ascii_digit() {
                Token::Num(word.parse().map_err(|_| format!("{word:?} is not an integer"))?)
            } else {
                Token::Var(word.to_owned())
            });
        } else {
            return Err(format!("unexpected {c:?} in {{{expr}}}"));
        }
    }
    Ok(tokens)
}

/// Recursive descent: sum := product (('+'|'-') product)*, product := unary (('*'|'/'|'%') unary)*.
struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    vars: &'a Vars,
    expr: &'a str,
}

impl Parser<'_> {
    fn overflow(&self) -> String {
        format!("{{{}}} overflows", self.expr)
    }

    fn sum(&mut self) -> Result<i64, String> {
        let mut v = self.product()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.tokens.get(self.pos) {
            self.pos += 1;
            let r = self.product()?;
            v = if *op == '+' { v.checked_add(r) } else { v.checked_sub(r) }
                .ok_or_else(|| self.overflow())?;
        }
        Ok(v)
    }

    fn product(&mut self) -> Result<i64, String> {
        let mut v = self.unary()?;
        while let Some(Token::Op(op @ ('*' | '/' | '%'))) = self.tokens.get(self.pos) {
            self.pos += 1;
            let r = self.unary()?;
            if *op != '*' && r == 0 {
                return Err(format!("division by zero in {{{}}}", self.expr));
            }
            v = match op {
                '*' => v.checked_mul(r),
                '/' => v.checked_div(r),
                _ => v.checked_rem(r),
            }
            .ok_or_else(|| self.overflow())?;
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<i64, String> {
        match self.tokens.get(self.pos) {
            Some(Token::Op('-')) => {
                self.pos += 1;
                self.unary()?.checked_neg().ok_or_else(|| self.overflow())
            }
            Some(Token::Op('(')) => {
                self.pos += 1;
                let v = self.sum()?;
                if self.tokens.get(self.pos) != Some(&Token::Op(')')) {
                    return Err(format!("missing `)` in {{{}}}", self.expr));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(Token::Num(n)) => {
                self.pos += 1;
                Ok(*n)
            }
            Some(Token::Var(name)) => {
                self.pos += 1;
                self.vars
                    .get(name)
                    .copied()
                    .ok_or_else(|| format!("unknown variable {name:?} in {{{}}}", self.expr))
            }
            Some(t) => Err(format!("unexpected {t:?} in {{{}}}", self.expr)),
            None => Err(format!("incomplete expression {{{}}}", self.expr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, i64)]) -> Vars {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    #[test]
    fn expands_arithmetic_and_escapes() {
        let v = vars(&[("i", 3), ("x", 2)]);
        assert_eq!(expand("tile-{x}-{i}", &v).unwrap(), "tile-2-3");
        assert_eq!(expand("{i * 1000 + 1}..{(i + 1) * 1000}", &v).unwrap(), "3001..4000");
        assert_eq!(expand("{-x % 3} {{literal}} {10 / 4}", &v).unwrap(), "-2 {literal} 2");
        assert!(expand("{y}", &v).unwrap_err().contains("unknown variable \"y\""));
        assert!(expand("{i / (x - 2)}", &v).unwrap_err().contains("division by zero"));
        assert!(expand("{i", &v).unwrap_err().contains("unclosed"));
        assert!(expand("a}", &v).unwrap_err().contains("unmatched"));
        assert!(expand("{i +}", &v).unwrap_err().contains("incomplete"));
        assert!(expand("{9223372036854775807 + i}", &v).unwrap_err().contains("overflows"));
    }

    #[test]
    fn for_clauses_nest_outermost_first() {
        let loops = parse_for("y in 0..2, x in 5..7").unwrap();
        let combos = combinations(&loops, &Vars::new());
        let pairs: Vec<(i64, i64)> = combos.iter().map(|v| (v["y"], v["x"])).collect();
        assert_eq!(pairs, vec![(0, 5), (0, 6), (1, 5), (1, 6)]);
        assert!(parse_for("x in 0..2, x in 0..3").unwrap_err().contains("twice"));
        assert!(parse_for("x from 0..2").unwrap_err().contains("VAR in"));
        assert!(parse_for("x in 3..1").unwrap_err().contains("backwards"));
        assert!(parse_for("x in 0..a").unwrap_err().contains("not an integer"));
        assert!(parse_for("x in 0..2000000").unwrap_err().contains("combinations"));
        assert_eq!(combinations(&parse_for("x in 0..0").unwrap(), &Vars::new()).len(), 0);
    }
}

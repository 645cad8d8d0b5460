/* noop: does nothing and succeeds. Used to measure task start and scheduler overhead. */
int main(void) { return 0; }

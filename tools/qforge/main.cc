// qforge CLI entry point (placeholder until commands land).
#include <cstdio>
int main() { std::puts("qforge"); return 0; }

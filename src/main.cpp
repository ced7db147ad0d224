#include <cstdio>
int main() {
    std::fprintf(stderr, "ur-agent: not implemented yet\n");
    return 1;
}

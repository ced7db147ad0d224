#include <doctest/doctest.h>
TEST_CASE("the test harness runs") { CHECK(1 + 1 == 2); }

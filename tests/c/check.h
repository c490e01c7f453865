/* check.h — the C tests' tiny harness: CHECK(cond) counts a pass or prints the failing
 * line; S("lit") expands to a string literal and its length. Each test ends by printing
 * "N passed, M failed". */
#ifndef MYRIAD_TEST_CHECK_H
#define MYRIAD_TEST_CHECK_H
#include <stdio.h>

#include "myriad.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static int passed, failed;
#define CHECK(cond)                                                             \
    do {                                                                        \
        if (cond) passed++;                                                     \
        else { failed++; printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); } \
    } while (0)

#endif

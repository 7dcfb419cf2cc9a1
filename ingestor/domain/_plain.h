/* Where a JSON string's plain bytes end: the first closing quote, backslash or control
 * character (below 0x20) at or after p, or end. Eight bytes a step: the classic "has a zero
 * byte" test ((x - 0x01..) & ~x & 0x80..) on the word xor'ed with '"' and with '\\', and on
 * the word less 0x20.. for the control characters; the lowest flagged byte is exact (a false
 * flag can only sit above a true one), so the first stop is the lowest set bit's byte.
 * A byte at or above 0x80 (UTF-8) stops the word loop as well, and the rest of that string
 * goes byte by byte (setting *high). Byte by byte this took 12 instructions a byte
 * (callgrind), about 40% of the scanner. */
#ifndef INGESTOR_PLAIN_H
#define INGESTOR_PLAIN_H

#include <stdint.h>
#include <string.h>

static inline const unsigned char *ingestor_plain_end(
    const unsigned char *p, const unsigned char *end, int *high)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    *high = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* ASCII, the common case: a byte at or above 0x80 stops the word loop too. */
    while (end - p >= 8) {
        uint64_t w, q, b, stop;
        memcpy(&w, p, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        stop = (((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w) | w) & highs;
        if (stop) {
            p += (unsigned)__builtin_ctzll(stop) >> 3;
            break;
        }
        p += 8;
    }
#endif
    while (p < end && *p != '"' && *p != '\\' && *p >= 0x20) {
        *high |= *p >= 0x80;
        p++;
    }
    return p;
}

/* Whether the n bytes at a and b are equal: keys and repeated values are short (a few to
 * 50 bytes), where the call to libc's memcmp cost more than the compare (callgrind: 670
 * instructions an odd). */
static inline int ingestor_same(const void *pa, const void *pb, size_t n)
{
    const unsigned char *a = (const unsigned char *)pa, *b = (const unsigned char *)pb;
    uint64_t x, y;
    while (n >= 8) {
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y)
            return 0;
        a += 8;
        b += 8;
        n -= 8;
    }
    while (n--) {
        if (*a++ != *b++)
            return 0;
    }
    return 1;
}

#endif

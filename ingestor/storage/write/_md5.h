/* MD5 (RFC 1321) of a short text, for the write path's odd keys (history.odd_key: the first
 * 8 bytes of md5(id), big-endian, signed). Computed here in C instead of looked up in a cache:
 * the lookup missed the CPU cache twice per odd (the cached id and its key). A property test
 * holds it equal to hashlib's (tests/unit/test_twins.py). */
#ifndef INGESTOR_MD5_H
#define INGESTOR_MD5_H

#include <stdint.h>
#include <string.h>

static const uint32_t ingestor_md5_k[64] = {
    0xd76aa478u, 0xe8c7b756u, 0x242070dbu, 0xc1bdceeeu,
    0xf57c0fafu, 0x4787c62au, 0xa8304613u, 0xfd469501u,
    0x698098d8u, 0x8b44f7afu, 0xffff5bb1u, 0x895cd7beu,
    0x6b901122u, 0xfd987193u, 0xa679438eu, 0x49b40821u,
    0xf61e2562u, 0xc040b340u, 0x265e5a51u, 0xe9b6c7aau,
    0xd62f105du, 0x02441453u, 0xd8a1e681u, 0xe7d3fbc8u,
    0x21e1cde6u, 0xc33707d6u, 0xf4d50d87u, 0x455a14edu,
    0xa9e3e905u, 0xfcefa3f8u, 0x676f02d9u, 0x8d2a4c8au,
    0xfffa3942u, 0x8771f681u, 0x6d9d6122u, 0xfde5380cu,
    0xa4beea44u, 0x4bdecfa9u, 0xf6bb4b60u, 0xbebfbc70u,
    0x289b7ec6u, 0xeaa127fau, 0xd4ef3085u, 0x04881d05u,
    0xd9d4d039u, 0xe6db99e5u, 0x1fa27cf8u, 0xc4ac5665u,
    0xf4292244u, 0x432aff97u, 0xab9423a7u, 0xfc93a039u,
    0x655b59c3u, 0x8f0ccc92u, 0xffeff47du, 0x85845dd1u,
    0x6fa87e4fu, 0xfe2ce6e0u, 0xa3014314u, 0x4e0811a1u,
    0xf7537e82u, 0xbd3af235u, 0x2ad7d2bbu, 0xeb86d391u,
};

static const uint8_t ingestor_md5_r[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

static void ingestor_md5_block(uint32_t h[4], const unsigned char *p)
{
    uint32_t w[16], a = h[0], b = h[1], c = h[2], d = h[3], f, t;
    int i, g;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16
             | (uint32_t)p[4 * i + 3] << 24;
    for (i = 0; i < 64; i++) {
        if (i < 16) { f = (b & c) | (~b & d); g = i; }
        else if (i < 32) { f = (d & b) | (~d & c); g = (5 * i + 1) & 15; }
        else if (i < 48) { f = b ^ c ^ d; g = (3 * i + 5) & 15; }
        else { f = c ^ (b | ~d); g = (7 * i) & 15; }
        t = a + f + ingestor_md5_k[i] + w[g];
        a = d; d = c; c = b;
        b = b + ((t << ingestor_md5_r[i]) | (t >> (32 - ingestor_md5_r[i])));
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
}

/* The first 8 bytes of md5(s[0:n]) as a big-endian signed integer. */
static int64_t ingestor_md5_key(const char *s, size_t n)
{
    uint32_t h[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u};
    unsigned char tail[128];
    uint64_t bits = (uint64_t)n * 8;
    size_t rest, last, i;
    uint64_t key = 0;
    while (n >= 64) {
        ingestor_md5_block(h, (const unsigned char *)s);
        s += 64;
        n -= 64;
    }
    rest = n;
    memcpy(tail, s, rest);
    tail[rest] = 0x80;
    last = rest < 56 ? 64 : 128;
    memset(tail + rest + 1, 0, last - rest - 1);
    for (i = 0; i < 8; i++)
        tail[last - 8 + i] = (unsigned char)(bits >> (8 * i));
    ingestor_md5_block(h, tail);
    if (last == 128)
        ingestor_md5_block(h, tail + 64);
    for (i = 0; i < 8; i++)
        key = key << 8 | ((h[i / 4] >> (8 * (i % 4))) & 0xFF);
    return (int64_t)key;
}

#endif

/* Redis's long double helpers (util.c: string2ld, ld2string LD_STR_HUMAN).
 * Redis computes INCRBYFLOAT in `long double` (80-bit on x86-64) and prints it
 * with "%.17Lf" minus trailing zeros; matching its replies byte for byte needs
 * the same arithmetic, which Rust does not have. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LONG_DOUBLE_CHARS 5 * 1024

static int string2ld(const char *s, size_t slen, long double *dp) {
    char buf[MAX_LONG_DOUBLE_CHARS];
    long double value;
    char *eptr;
    if (slen == 0 || slen >= sizeof(buf)) return 0;
    memcpy(buf, s, slen);
    buf[slen] = '\0';
    errno = 0;
    value = strtold(buf, &eptr);
    if (isspace((unsigned char)buf[0]) || eptr[0] != '\0' || (size_t)(eptr - buf) != slen ||
        ((errno == ERANGE) && (value == HUGE_VALL || value == -HUGE_VALL || fpclassify(value) == FP_ZERO)) ||
        errno == EINVAL || isnan(value))
        return 0;
    *dp = value;
    return 1;
}

static int ld2string_human(char *buf, size_t len, long double value) {
    size_t l = 0;
    if (isinf(value)) {
        if (value > 0) { memcpy(buf, "inf", 3); l = 3; }
        else { memcpy(buf, "-inf", 4); l = 4; }
    } else {
        int n = snprintf(buf, len, "%.17Lf", value);
        if (n < 0 || (size_t)n + 1 > len) return 0;
        l = (size_t)n;
        if (strchr(buf, '.') != NULL) {
            char *p = buf + l - 1;
            while (*p == '0') { p--; l--; }
            if (*p == '.') l--;
        }
        if (l == 2 && buf[0] == '-' && buf[1] == '0') { buf[0] = '0'; l = 1; }
    }
    buf[l] = '\0';
    return (int)l;
}

/* Returns: length written to out (>0) on success;
 * -1 if `cur` is not a valid float, -2 if `incr` is not, -3 if the result is
 * NaN or infinite, -4 if out is too small. */
int anykv_ld_incr(const char *cur, size_t curlen, int has_cur,
                  const char *incr, size_t incrlen, char *out, size_t outlen) {
    long double value = 0, inc;
    if (has_cur && !string2ld(cur, curlen, &value)) return -1;
    if (!string2ld(incr, incrlen, &inc)) return -2;
    value += inc;
    if (isnan(value) || isinf(value)) return -3;
    int l = ld2string_human(out, outlen, value);
    if (l <= 0) return -4;
    return l;
}

/* Redis 7.0's getTimeoutFromObjectOrReply(UNIT_SECONDS): the argument as a
 * long double, times 1000, rounded up (ceill), cast to long long with x86's
 * overflow result (LLONG_MIN, which Redis then reports as negative).
 * Returns 0 when the argument is not a valid long double. */
int anykv_timeout_ms(const char *s, size_t slen, long long *ms) {
    long double v;
    if (!string2ld(s, slen, &v)) return 0;
    long double t = ceill(v * 1000.0L);
    if (!(t >= -9223372036854775808.0L && t < 9223372036854775808.0L))
        *ms = (-9223372036854775807LL - 1);
    else
        *ms = (long long)t;
    return 1;
}

/* Validates a long double the way Redis's string2ld does. */
int anykv_ld_valid(const char *s, size_t slen) {
    long double v;
    return string2ld(s, slen, &v);
}

/* strtod-based double parsing as Redis's string2d / getDoubleFromObject:
 * returns 1 and stores the value, or 0 when invalid. */
int anykv_string2d(const char *s, size_t slen, double *dp) {
    char buf[MAX_LONG_DOUBLE_CHARS];
    char *eptr;
    double value;
    if (slen == 0 || slen >= sizeof(buf)) return 0;
    memcpy(buf, s, slen);
    buf[slen] = '\0';
    errno = 0;
    value = strtod(buf, &eptr);
    if (isspace((unsigned char)buf[0]) || eptr[0] != '\0' || (size_t)(eptr - buf) != slen ||
        (errno == ERANGE && (value == HUGE_VAL || value == -HUGE_VAL || fpclassify(value) == FP_ZERO)) ||
        isnan(value))
        return 0;
    *dp = value;
    return 1;
}

/* "%.17g" formatting, as Redis's addReplyDouble for RESP2 bulk replies. */
int anykv_fmt_g17(double v, char *out, size_t outlen) {
    return snprintf(out, outlen, "%.17g", v);
}

# Shared by the write path's compiled twins (cimport): calendar arithmetic in C.

cdef inline long long days_from_civil(int y, int m, int d) noexcept:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    cdef long long yy = y - (1 if m <= 2 else 0)
    cdef long long era = (yy if yy >= 0 else yy - 399) // 400
    cdef long long yoe = yy - era * 400
    cdef long long doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468

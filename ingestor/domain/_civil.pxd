# Shared by the compiled twins (cimport): calendar arithmetic in C.

from cpython.datetime cimport (
    PyDateTime_DATE_GET_HOUR,
    PyDateTime_DATE_GET_MICROSECOND,
    PyDateTime_DATE_GET_MINUTE,
    PyDateTime_DATE_GET_SECOND,
    PyDateTime_GET_DAY,
    PyDateTime_GET_MONTH,
    PyDateTime_GET_YEAR,
)

cdef inline long long days_from_civil(int y, int m, int d) noexcept:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    cdef long long yy = y - (1 if m <= 2 else 0)
    cdef long long era = (yy if yy >= 0 else yy - 399) // 400
    cdef long long yoe = yy - era * 400
    cdef long long doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef long long doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline void civil_from_days(long long z, int* y, int* m, int* d) noexcept:
    """The proleptic Gregorian date of a day since 1970-01-01 (H. Hinnant's civil_from_days)."""
    z += 719468
    cdef long long era = (z if z >= 0 else z - 146096) // 146097
    cdef long long doe = z - era * 146097
    cdef long long yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef long long doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef long long mp = (5 * doy + 2) // 153
    d[0] = <int>(doy - (153 * mp + 2) // 5 + 1)
    m[0] = <int>(mp + 3 if mp < 10 else mp - 9)
    y[0] = <int>(yoe + era * 400 + (1 if m[0] <= 2 else 0))


cdef inline long long wall_micros(object t, long long epoch_days) noexcept:
    """µs from ``epoch_days`` (days since 1970-01-01) to a datetime's wall-clock fields: its
    UTC time when its tzinfo is UTC (the caller checks that, and that ``t`` is a datetime)."""
    return (
        ((days_from_civil(PyDateTime_GET_YEAR(t), PyDateTime_GET_MONTH(t), PyDateTime_GET_DAY(t))
          - epoch_days) * 86400
         + PyDateTime_DATE_GET_HOUR(t) * 3600
         + PyDateTime_DATE_GET_MINUTE(t) * 60
         + PyDateTime_DATE_GET_SECOND(t)) * 1000000
        + PyDateTime_DATE_GET_MICROSECOND(t)
    )

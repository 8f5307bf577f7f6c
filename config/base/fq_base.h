/* frameq base layer: the attribute macros every module uses. Includes no third-party header,
 * so a module that needs only these (fq_error.h, fq_log.h) pulls in nothing else. */
#ifndef FQ_BASE_H
#define FQ_BASE_H

/** The caller must use the result (a status, an owned pointer). */
#define FQ_WARN_UNUSED __attribute__((warn_unused_result))
/** printf-style format at argument fmt, its arguments from args (0: a va_list). */
#define FQ_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
/** The variadic arguments end with a NULL pointer (label lists). */
#define FQ_SENTINEL __attribute__((sentinel))

#endif

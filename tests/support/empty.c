/* Keeps the test support library non-empty before any helper exists. */
typedef int fq_test_support_empty_t;

/**
 * @file fq_test_env.h
 * @brief Small helpers for integration tests: required environment, unique names, directory
 *        entries, S3 settings (Kafka admin chores: fq_test_kafka.h).
 *
 * Integration tests talk to the real local stack (deploy/local/up). When its environment is
 * missing they must fail loudly, not skip, so a green run always means the services were used.
 */
#ifndef FQ_TEST_ENV_H
#define FQ_TEST_ENV_H

#include <stddef.h>

#include "fq_config.h"

/**
 * @brief Returns the value of environment variable @p name, or fails the current cmocka test
 *        (or exits 1 outside a test) with a message that says how to get the stack.
 */
const char *fq_test_env_require(const char *name);

/**
 * @brief Writes "<prefix>-<pid>-<time>-<counter>-<random>" into @p buf: unique across runs,
 *        processes and calls, and valid as a Kafka topic, group id, item code or S3 key part.
 * @return @p buf.
 */
char *fq_test_unique_name(const char *prefix, char *buf, size_t size);

/** @brief Entries of directory @p path other than "." and "..", or -1 when it cannot be read. */
int fq_test_count_dir_entries(const char *path);

/** @brief Fails the current test unless the stack's S3 settings (S3_ENDPOINT, AWS_ACCESS_KEY_ID,
 *         AWS_SECRET_ACCESS_KEY) are in the environment. */
void fq_test_s3_require(void);

/** @brief Sets cfg's S3 endpoint, region (S3_REGION, default us-east-1) and keys from the
 *         environment; unset ones stay NULL. */
void fq_test_s3_settings(fq_config_t *cfg);

#endif /* FQ_TEST_ENV_H */

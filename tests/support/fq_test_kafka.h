/**
 * @file fq_test_kafka.h
 * @brief The tests' Kafka chores through the Admin API: topics made for a test, and the
 *        topics and groups a test leaves behind removed again.
 *
 * Every test works in topics and a group of its own; deleting them at its end keeps the local
 * broker small, so that a restart (the kafka-restart chaos scenario, `deploy/local/up`) does
 * not slow down with every run of the suite. Messages on stderr name the call and the name.
 */
#ifndef FQ_TEST_KAFKA_H
#define FQ_TEST_KAFKA_H

#include <stddef.h>

/** @brief What an admin call left undone: FQ_TEST_KAFKA_MISSING when each name it did not
 *         act on did not exist (named on stderr), FQ_TEST_KAFKA_FAILED on any other error. */
enum {
    FQ_TEST_KAFKA_OK = 0,
    FQ_TEST_KAFKA_FAILED = 1,
    FQ_TEST_KAFKA_MISSING = 3,
};

/**
 * @brief Creates topic @p topic with @p partitions partitions (replication 1) through the
 *        Admin API on @p brokers and waits until it is created.
 * @return 0 on success (or if it already exists), -1 with a message on stderr otherwise.
 */
int fq_test_kafka_create_topic(const char *brokers, const char *topic, int partitions);

/** @brief Deletes the @p n topics @p names on @p brokers.
 *  @return FQ_TEST_KAFKA_OK, _MISSING (some did not exist, the rest deleted) or _FAILED. */
int fq_test_kafka_delete_topics(const char *brokers, const char *const *names, size_t n);

/** @brief Deletes the @p n consumer groups @p names (their committed offsets) on @p brokers.
 *  A group with members is not deleted (the broker refuses: _FAILED).
 *  @return FQ_TEST_KAFKA_OK, _MISSING (some did not exist, the rest deleted) or _FAILED. */
int fq_test_kafka_delete_groups(const char *brokers, const char *const *names, size_t n);

/** @brief Deletes every topic and consumer group on @p brokers named one of the @p n
 *         @p prefixes, or a prefix followed by '.' or '-' and more (a test's run id: its topics
 *         "fqt.ID", "fqt.ID.retry", its group "fqt-ID"). Groups first, then topics; a group
 *         that still has members (static ones stay until their session times out) is left for
 *         the broker to expire, not an error.
 *  @return FQ_TEST_KAFKA_OK (also when nothing lies under them), or _FAILED. */
int fq_test_kafka_delete_under(const char *brokers, const char *const *prefixes, size_t n);

#endif /* FQ_TEST_KAFKA_H */

/* fq_admin — the Kafka chores of the test scripts that kcat cannot do.
 *
 *   fq_admin [-b BROKERS] delete-topics TOPIC...   deletes the topics
 *   fq_admin [-b BROKERS] delete-groups GROUP...   deletes the consumer groups (their committed
 *                                                  offsets); a group with members is refused
 *   fq_admin [-b BROKERS] delete-under PREFIX...   deletes every topic and group named PREFIX,
 *                                                  or PREFIX and '.' or '-' and more; a group
 *                                                  with members is left to expire
 *
 * BROKERS defaults to KAFKA_BROKERS. Each name is asked for on its own, and every one that
 * could not be deleted is named on stderr with the broker's reason; delete-under names nothing
 * when nothing lies under the prefixes.
 * Exit 0 when all were deleted, 3 when the only ones left undone did not exist, 1 on any other
 * error, 2 on usage. The test scripts delete what a test made when it ends
 * (tests/support/consumer_lib.sh, fq_test_teardown). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fq_test_kafka.h"

static int usage(void)
{
    fprintf(stderr, "usage: fq_admin [-b BROKERS] delete-topics TOPIC...\n"
                    "       fq_admin [-b BROKERS] delete-groups GROUP...\n"
                    "       fq_admin [-b BROKERS] delete-under PREFIX...\n"
                    "  (BROKERS defaults to KAFKA_BROKERS)\n"
                    "exit 0 all deleted, 3 some did not exist, 1 error, 2 usage\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *brokers = getenv("KAFKA_BROKERS");
    int opt;
    while ((opt = getopt(argc, argv, "+b:h")) != -1) {
        if (opt != 'b')
            return usage();
        brokers = optarg;
    }
    if (argc - optind < 2)
        return usage();
    if (!brokers || !*brokers) {
        fprintf(stderr, "fq_admin: no brokers: set KAFKA_BROKERS or give -b\n");
        return 2;
    }
    const char *command = argv[optind];
    const char *const *names = (const char *const *)(argv + optind + 1);
    size_t n = (size_t)(argc - optind - 1);
    if (strcmp(command, "delete-topics") == 0)
        return fq_test_kafka_delete_topics(brokers, names, n);
    if (strcmp(command, "delete-groups") == 0)
        return fq_test_kafka_delete_groups(brokers, names, n);
    if (strcmp(command, "delete-under") == 0)
        return fq_test_kafka_delete_under(brokers, names, n);
    fprintf(stderr, "fq_admin: unknown command '%s'\n", command);
    return usage();
}

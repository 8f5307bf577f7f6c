/* runstat CMD ARGS... — runs a command and prints what it cost, as one JSON line on stdout
 * after the command has ended (so it is the last line of the combined stdout):
 *
 *   {"wall_ms":123.4,"cpu_ms":456.7,"maxrss_kb":12345,"exit":0}
 *
 * cpu_ms is user + system time of the command and everything it waited for (wait4's
 * rusage); maxrss_kb is its peak resident set. exit is the exit status, or 128 + signal.
 * runstat exits with the command's status.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double tv_ms(struct timeval tv)
{
    return (double)tv.tv_sec * 1000.0 + (double)tv.tv_usec / 1000.0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: runstat CMD [ARGS...]\n");
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "runstat: fork: %s\n", strerror(errno));
        return 2;
    }
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        fprintf(stderr, "runstat: %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof(ru));
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "runstat: wait4: %s\n", strerror(errno));
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall_ms =
        (double)(t1.tv_sec - t0.tv_sec) * 1000.0 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    double cpu_ms = tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime);
    int code = WIFEXITED(status)     ? WEXITSTATUS(status)
               : WIFSIGNALED(status) ? 128 + WTERMSIG(status)
                                     : 255;
    fflush(stdout);
    printf("{\"wall_ms\":%.1f,\"cpu_ms\":%.1f,\"maxrss_kb\":%ld,\"exit\":%d}\n", wall_ms, cpu_ms,
           ru.ru_maxrss, code);
    return code;
}

/*
 * pause: the process that holds a pod's namespaces open.
 *
 * It sleeps until a signal arrives, reaps every child that exits (it runs as PID 1 of
 * the pod when containers share its PID namespace, so orphans are reparented to it),
 * and exits 0 on SIGTERM or SIGINT. Built static so the image needs nothing else.
 * Same contract as Kubernetes' build/pause/linux/pause.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "skiff-pause 1.0"

static volatile sig_atomic_t stop_requested = 0;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static void install(int sig, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sa.sa_flags = (sig == SIGCHLD) ? (SA_NOCLDSTOP | SA_RESTART) : SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) < 0) {
        fprintf(stderr, "pause: sigaction(%d): %s\n", sig, strerror(errno));
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        printf("%s\n", VERSION);
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: warning: not running as PID 1\n");
    }

    /* Block the signals we handle, then wait for them atomically in sigsuspend, so a
     * signal arriving between the check and the wait is never lost. */
    sigset_t handled, waitmask;
    sigemptyset(&handled);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &handled, &waitmask) < 0) {
        fprintf(stderr, "pause: sigprocmask: %s\n", strerror(errno));
        return 1;
    }
    install(SIGTERM, on_stop);
    install(SIGINT, on_stop);
    install(SIGCHLD, on_child);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGCHLD);

    /* Children may have exited before the SIGCHLD handler existed. */
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    while (!stop_requested) {
        sigsuspend(&waitmask);
    }
    return 0;
}

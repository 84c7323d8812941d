/*
 * skiff-bridge shim: forwards one CNI invocation to the Skiff CNI daemon.
 *
 * Installed as the interpreter of the `skiff-bridge` script (`#!<bin>/skiff-bridge-shim`),
 * so it runs as `skiff-bridge-shim <path of skiff-bridge>`. It reads the network config
 * on stdin, looks for the top-level string "daemonSocket" in it, and sends the CNI_*
 * environment, the config and an fd of its own network namespace (the runtime's: where
 * the bridge and host veths belong) to the daemon on that unix socket. The daemon
 * (cni/daemon.py) answers with the plugin's exit code, stdout and stderr, which are
 * passed on unchanged.
 *
 * Wire format (protocol 1), all on one SOCK_STREAM connection:
 *   request:  {"protocol":1,"env":{"CNI_COMMAND":"ADD",...},"stdinLength":N}\n <N bytes of stdin>
 *             (the netns fd rides along with the header as SCM_RIGHTS)
 *   reply:    'A' once the daemon holds the whole request and commits to running it, or
 *             'R' if it declines; after 'A':
 *             {"exitCode":0,"stdoutLength":N,"stderrLength":M}\n <N bytes stdout> <M bytes stderr>
 *
 * Whenever no daemon takes the request (no daemonSocket; the socket missing, refused or
 * hung, where connect, send and the wait for 'A' are each bounded by ACCEPT_TIMEOUT_MS;
 * or 'R'), the shim execs the Python plugin `<path of skiff-bridge>-py` with the same
 * environment and the same stdin, so the plugin works without the daemon. Once the daemon said 'A' it never falls back (the
 * daemon may already have changed the host): a lost reply is CNI error 11, try again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL 1
#define ACCEPT_TIMEOUT_MS 3000
#define MAX_READ (64u << 20)
#define TRY_AGAIN_LATER 11

extern char **environ;

struct buf {
    char *data;
    size_t len, cap;
};

static void die_oom(void)
{
    static const char msg[] = "skiff-bridge-shim: out of memory\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        die_oom();
    b->data = data;
    b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* A JSON string literal; bytes >= 0x80 are copied as they are (the daemon decodes UTF-8). */
static void buf_json_string(struct buf *b, const char *s, size_t n)
{
    buf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            buf_add(b, esc, 2);
        } else if (c < 0x20) {
            char esc[7];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            buf_add(b, esc, 6);
        } else {
            buf_add(b, (const char *)&c, 1);
        }
    }
    buf_add(b, "\"", 1);
}

/* Read fd to EOF; 0 on success. */
static int read_all(int fd, struct buf *b)
{
    for (;;) {
        if (b->len >= MAX_READ)
            return -1;
        buf_reserve(b, 65536);
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        b->len += (size_t)n;
    }
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == ENOTSOCK)
            w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* -- a minimal JSON scanner: just enough to read top-level string members ------------ */

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* i at the opening quote; the index after the closing quote, or 0 if unterminated. */
static size_t scan_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* i at the start of any value; the index after it, or 0 if malformed. */
static size_t scan_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return scan_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = scan_string(s, n, i);
                if (!i)
                    return 0;
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return 0;
    }
    size_t start = i;
    while (i < n && !strchr(",}] \t\r\n", s[i]))
        i++;
    return i > start ? i : 0;
}

/*
 * The value of a top-level string member of the JSON object in s (the last one if the key
 * repeats), unescaped into out. 1 if found; 0 if absent, not a plain string (\u escapes
 * are not decoded: the caller then takes the slow but complete path), too long, or if s is
 * not an object.
 */
static int top_level_string(const char *s, size_t n, const char *key, char *out, size_t outsz)
{
    size_t keylen = strlen(key), i = skip_ws(s, n, 0);
    int found = 0;
    if (i >= n || s[i] != '{')
        return 0;
    i = skip_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return 0;
    for (;;) {
        if (i >= n || s[i] != '"')
            return 0;
        size_t kend = scan_string(s, n, i);
        if (!kend)
            return 0;
        int match = kend - i - 2 == keylen && memcmp(s + i + 1, key, keylen) == 0;
        i = skip_ws(s, n, kend);
        if (i >= n || s[i] != ':')
            return 0;
        size_t vstart = skip_ws(s, n, i + 1);
        size_t vend = scan_value(s, n, vstart);
        if (!vend)
            return 0;
        if (match) {
            found = 0;
            if (s[vstart] == '"') {
                size_t o = 0, j = vstart + 1;
                found = 1;
                for (; j < vend - 1 && found; j++) {
                    char c = s[j];
                    if (c == '\\') {
                        char e = s[++j];
                        c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : e;
                        if (e == 'u')
                            found = 0;
                    }
                    if (o + 1 >= outsz)
                        found = 0;
                    else
                        out[o++] = c;
                }
                out[o] = '\0';
            }
        }
        i = skip_ws(s, n, vend);
        if (i < n && s[i] == ',') {
            i = skip_ws(s, n, i + 1);
            continue;
        }
        return i < n && s[i] == '}' ? found : 0;
    }
}

/* -- fallback and errors ---------------------------------------------------------------- */

/* exec the Python plugin with the stdin we already consumed; returns only on failure. */
static void exec_fallback(const char *script, const struct buf *input)
{
    char path[PATH_MAX + 32], resolved[PATH_MAX];
    if (script && realpath(script, resolved))
        snprintf(path, sizeof path, "%s-py", resolved);
    else if (script)
        snprintf(path, sizeof path, "%s-py", script);
    else {
        ssize_t n = readlink("/proc/self/exe", resolved, sizeof resolved - 1);
        if (n <= 0)
            return;
        resolved[n] = '\0';
        char *slash = strrchr(resolved, '/');
        if (slash)
            *slash = '\0';
        snprintf(path, sizeof path, "%s/skiff-bridge-py", resolved);
    }
    int fd = memfd_create("skiff-cni-stdin", MFD_CLOEXEC);
    if (fd < 0 || write_all(fd, input->data ? input->data : "", input->len) != 0 || lseek(fd, 0, SEEK_SET) != 0)
        return;
    if (dup2(fd, 0) < 0)
        return;
    close(fd);
    char *argv[] = {path, NULL};
    execv(path, argv);
    fprintf(stderr, "skiff-bridge-shim: cannot execute the fallback plugin %s: %s\n", path, strerror(errno));
}

/* The spec's error result on stdout, exit 1. */
static void fail(const struct buf *input, int code, const char *msg, const char *fmt, ...)
{
    char version[16] = "1.0.0", details[1024];
    char found[16];
    if (input->len && top_level_string(input->data, input->len, "cniVersion", found, sizeof found)
        && strspn(found, "0123456789.") == strlen(found) && found[0])
        strcpy(version, found);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(details, sizeof details, fmt, ap);
    va_end(ap);
    struct buf out = {0};
    buf_str(&out, "{\"cniVersion\":\"");
    buf_str(&out, version);
    buf_str(&out, "\",\"code\":");
    char num[16];
    snprintf(num, sizeof num, "%d", code);
    buf_str(&out, num);
    buf_str(&out, ",\"msg\":");
    buf_json_string(&out, msg, strlen(msg));
    buf_str(&out, ",\"details\":");
    buf_json_string(&out, details, strlen(details));
    buf_str(&out, "}");
    fprintf(stderr, "skiff-bridge: %s: %s\n", msg, details);
    write_all(1, out.data, out.len);
    exit(1);
}

/* -- talking to the daemon --------------------------------------------------------------- */

static int connect_daemon(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path)
        return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* Bounds connect() (which waits while a hung daemon's backlog is full) and the request's sends. */
    struct timeval timeout = {.tv_sec = ACCEPT_TIMEOUT_MS / 1000, .tv_usec = ACCEPT_TIMEOUT_MS % 1000 * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    while (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

/* Send the header with our netns fd attached, then the config; 0 on success. */
static int send_request(int sock, const struct buf *input)
{
    struct buf header = {0};
    char num[32];
    buf_str(&header, "{\"protocol\":");
    snprintf(num, sizeof num, "%d", PROTOCOL);
    buf_str(&header, num);
    buf_str(&header, ",\"env\":{");
    int first = 1;
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (strncmp(*e, "CNI_", 4) != 0 || !eq)
            continue;
        if (!first)
            buf_add(&header, ",", 1);
        first = 0;
        buf_json_string(&header, *e, (size_t)(eq - *e));
        buf_add(&header, ":", 1);
        buf_json_string(&header, eq + 1, strlen(eq + 1));
    }
    buf_str(&header, "},\"stdinLength\":");
    snprintf(num, sizeof num, "%zu", input->len);
    buf_str(&header, num);
    buf_str(&header, "}\n");

    int netns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (netns < 0)
        return -1;
    union {
        char space[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = header.data, .iov_len = header.len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &netns, sizeof(int));
    ssize_t sent;
    do
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    close(netns);
    if (sent <= 0)
        return -1;
    if (write_all(sock, header.data + sent, header.len - (size_t)sent) != 0)
        return -1;
    free(header.data);
    if (write_all(sock, input->data ? input->data : "", input->len) != 0)
        return -1;
    shutdown(sock, SHUT_WR);
    return 0;
}

static long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/*
 * The daemon's first byte: 'A' or 'R'; -1 if none came within the timeout, and 'L' if the
 * 'A' came just too late. Giving up shuts our receive side first, which makes the
 * daemon's 'A' fail with EPIPE from then on (it then drops the request), so the daemon
 * and the fallback can never both run one request.
 */
static int await_verdict(int sock)
{
    long deadline = monotonic_ms() + ACCEPT_TIMEOUT_MS;
    for (;;) {
        long left = deadline - monotonic_ms();
        int r = 0;
        if (left > 0) {
            struct pollfd p = {.fd = sock, .events = POLLIN};
            r = poll(&p, 1, (int)left);
            if (r < 0 && errno == EINTR)
                continue;
        }
        char c;
        if (r <= 0) {
            shutdown(sock, SHUT_RD);
            return recv(sock, &c, 1, MSG_DONTWAIT) == 1 && c == 'A' ? 'L' : -1;
        }
        ssize_t n = read(sock, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        return n == 1 ? (unsigned char)c : -1;
    }
}

static long header_int(const char *header, const char *key)
{
    const char *p = strstr(header, key);
    if (!p)
        return -1;
    p += strlen(key);
    while (*p == ' ' || *p == '"' || *p == ':')
        p++;
    char *end;
    long v = strtol(p, &end, 10);
    return end == p ? -1 : v;
}

int main(int argc, char **argv)
{
    /* Run as the interpreter of the skiff-bridge script, argv[1] is that script. */
    const char *script = argc >= 2 ? argv[1] : NULL;
    struct buf input = {0};
    if (read_all(0, &input) != 0)
        fail(&input, 5, "I/O failure", "cannot read the network config from stdin: %s", strerror(errno));

    char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (!top_level_string(input.data, input.len, "daemonSocket", socket_path, sizeof socket_path)
        || !socket_path[0]) {
        exec_fallback(script, &input);
        fail(&input, 100, "internal error", "no daemon configured and the Python plugin cannot be run");
    }
    int sock = connect_daemon(socket_path);
    int verdict = -1;
    if (sock >= 0 && send_request(sock, &input) == 0)
        verdict = await_verdict(sock);
    if (verdict == 'L')
        fail(&input, TRY_AGAIN_LATER, "try again later",
             "the Skiff CNI daemon at %s took the request after %d ms, too late to read its reply", socket_path,
             ACCEPT_TIMEOUT_MS);
    if (verdict != 'A') {
        if (sock >= 0)
            close(sock);
        exec_fallback(script, &input);
        fail(&input, TRY_AGAIN_LATER, "try again later",
             "the Skiff CNI daemon at %s did not take the request and the Python plugin cannot be run", socket_path);
    }

    struct buf reply = {0};
    if (read_all(sock, &reply) != 0)
        fail(&input, TRY_AGAIN_LATER, "try again later", "reading the reply of the Skiff CNI daemon at %s: %s",
             socket_path, strerror(errno));
    close(sock);
    char *nl = reply.len ? memchr(reply.data, '\n', reply.len) : NULL;
    if (!nl)
        fail(&input, TRY_AGAIN_LATER, "try again later",
             "the Skiff CNI daemon at %s closed the connection without a reply", socket_path);
    *nl = '\0';
    long code = header_int(reply.data, "\"exitCode\"");
    long out_len = header_int(reply.data, "\"stdoutLength\"");
    long err_len = header_int(reply.data, "\"stderrLength\"");
    size_t body = (size_t)(nl + 1 - reply.data);
    if (code < 0 || out_len < 0 || err_len < 0 || body + (size_t)out_len + (size_t)err_len > reply.len)
        fail(&input, TRY_AGAIN_LATER, "try again later", "the Skiff CNI daemon at %s sent a truncated reply",
             socket_path);
    write_all(2, reply.data + body + out_len, (size_t)err_len);
    write_all(1, reply.data + body, (size_t)out_len);
    return (int)(code & 0xff);
}

/*
 * megactl_conn.h: megactl's client connection to a megaingestd listener
 * (src/tools/megactl_conn.c). Private to megactl.
 *
 * One blocking connection, Unix or TCP; on TCP optionally TLS (OpenSSL over
 * the socket) and the Forward shared-key handshake as the client. Once open,
 * bytes go and come as on a plain socket, whichever of these is underneath.
 * Every function prints its own failure to stderr as "WHO: WHERE: why".
 */
#ifndef MI_MEGACTL_CONN_H
#define MI_MEGACTL_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* What to connect to and how. Strings are borrowed for the call. */
struct megactl_conn_opts {
	const char *who;          /* "megactl replay": the prefix of messages */
	const char *unix_path;    /* the Unix socket, or NULL for TCP */
	const char *tcp;          /* "host:port" ("[::1]:port"), used when unix_path is NULL */
	const char *shared_key;   /* TCP: run the Forward handshake with it; NULL: none */
	bool tls;                 /* TCP: wrap the connection in TLS */
	bool insecure;            /* TLS: do not verify the server's certificate */
	const char *ca_file;      /* TLS: the CAs to trust; NULL: the system store */
	const char *cert_file;    /* TLS: our client certificate (PEM chain), or NULL */
	const char *key_file;     /* TLS: its key (NULL: in cert_file) */
	int timeout_s;            /* bound on each send and receive */
};

struct megactl_conn;

/* Connect, then TLS and the handshake as OPTS asks. NULL when any step
 * failed (said on stderr). The caller closes it with megactl_conn_close. */
struct megactl_conn *megactl_conn_open(const struct megactl_conn_opts *opts)
	__attribute__((warn_unused_result));

/* Send all LEN bytes of P. 0, or -1 with megactl_conn_error() saying why. */
int megactl_conn_send(struct megactl_conn *c, const void *p, size_t len)
	__attribute__((warn_unused_result));

/* Receive at most LEN bytes into P: their count, 0 at EOF, or -1 with
 * errno EAGAIN when the timeout passed, else megactl_conn_error() says why. */
ssize_t megactl_conn_recv(struct megactl_conn *c, void *p, size_t len)
	__attribute__((warn_unused_result));

/* The reason of the last failed send or receive (owned by C). */
const char *megactl_conn_error(const struct megactl_conn *c);

/* Close and free C (NULL is fine). */
void megactl_conn_close(struct megactl_conn *c);

/* Read a shared key from PATH: its first line, without the line end. 0 with
 * *KEY (free it with megactl_conn_key_free), or -1 (said on stderr with WHO). */
int megactl_conn_key_read(const char *who, const char *path, char **key)
	__attribute__((warn_unused_result));

/* Wipe and free a key from megactl_conn_key_read (NULL is fine). */
void megactl_conn_key_free(char *key);

#endif

/*
 * megactl_replay.c: `megactl replay FILE` — send dead-letter lines back
 * through the daemon's normal path once their cause is fixed.
 *
 * Each line of FILE (a dead-letter.jsonl moved aside) is a JSON object whose
 * "event" is the event as received, with bytes JSON cannot carry written as
 * {"$base64": ...} (and ext values as {"$ext": type, "$base64": ...}). The
 * line is turned back into msgpack, bin and ext included (megactl_json.c,
 * with yajl), and its event sent
 * in Forward mode ([tag, [[time, event], ...], {"chunk": id}]) over the Unix
 * socket or TCP (with TLS and the shared-key handshake when the listener
 * has them: megactl_conn.c), exactly as a client would; the daemon validates and writes
 * it like any other event, and dead-letters it again (into a new
 * dead-letter.jsonl) when it still fails. Each chunk waits for its ack, so
 * when megactl returns 0 every line is committed or dead-lettered again.
 *
 * The entry time is the line's "event_time" (the forward time it first
 * came with), else its "time" (when it was dead-lettered, which for an
 * event refused on arrival is its receive time). The chunk id is derived
 * from the bytes of the lines it carries, so running the same file twice
 * gives events without an mg_id the same derived ids: no duplicates.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <openssl/evp.h>

#include "config.h"
#include "megactl.h"
#include "megactl_conn.h"
#include "megactl_json.h"
#include "record.h"

#define REPLAY_DEFAULT_UNIX "/run/megaingest/megaingest.sock"
#define REPLAY_TAG_MAX 256

/* ---- one dead-letter line ---------------------------------------------------- */

struct replay_line {
	msgpack_sbuffer sb;       /* the whole line as msgpack */
	msgpack_unpacked up;      /* ... and unpacked */
	const msgpack_object *event;
	char tag[REPLAY_TAG_MAX];
	int64_t time_ns;
};

static const msgpack_object *replay_field(const msgpack_object *map, const char *key)
{
	size_t n = strlen(key);

	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];

		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
		    memcmp(kv->key.via.str.ptr, key, n) == 0)
			return &kv->val;
	}
	return NULL;
}

/* Time from the string field KEY of MAP; 0 when it has none. */
static int replay_time(const msgpack_object *map, const char *key, int64_t *ns)
{
	const msgpack_object *v = replay_field(map, key);

	return v && v->type == MSGPACK_OBJECT_STR &&
	       record_parse_rfc3339(v->via.str.ptr, v->via.str.size, ns) == 0;
}

/* Parse TEXT into L. 0, or -1 with WHY (and the column in *COL, else 0). */
static int replay_parse_line(const char *text, size_t len, struct replay_line *l,
			     char *why, size_t whylen, size_t *col)
{
	const msgpack_object *tag;
	struct timespec now;

	if (megactl_json_to_msgpack(text, len, &l->sb, why, whylen, col) < 0)
		return -1;
	*col = 0;
	if (msgpack_unpack_next(&l->up, l->sb.data, l->sb.size, NULL) != MSGPACK_UNPACK_SUCCESS) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	if (l->up.data.type != MSGPACK_OBJECT_MAP) {
		snprintf(why, whylen, "not a JSON object");
		return -1;
	}
	l->event = replay_field(&l->up.data, "event");
	if (!l->event || l->event->type == MSGPACK_OBJECT_NIL) {
		snprintf(why, whylen, "no \"event\" to send (the daemon could not record it as "
			 "received)");
		return -1;
	}
	tag = replay_field(&l->up.data, "tag");
	if (tag && tag->type == MSGPACK_OBJECT_STR && tag->via.str.size > 0 &&
	    tag->via.str.size < sizeof(l->tag))
		snprintf(l->tag, sizeof(l->tag), "%.*s", (int)tag->via.str.size, tag->via.str.ptr);
	else
		snprintf(l->tag, sizeof(l->tag), "megactl.replay");
	if (!replay_time(&l->up.data, "event_time", &l->time_ns) &&
	    !replay_time(&l->up.data, "time", &l->time_ns)) {
		clock_gettime(CLOCK_REALTIME, &now);
		l->time_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	}
	return 0;
}

/* ---- the connection -------------------------------------------------------- */

struct replay {
	const char *file;
	const char *unix_path;     /* or NULL */
	const char *tcp;           /* "host:port", or NULL */
	int chunk_lines;
	int timeout_s;
	/* TCP only: the handshake and TLS (from the options, else the config) */
	const char *key_file;      /* --shared-key-file */
	const char *shared_key;    /* the key file's, else listen.shared_key */
	bool tls, insecure;
	const char *ca, *cert, *key;
	struct megactl_conn *conn;
	msgpack_unpacker unp;
	/* the chunk being built */
	char tag[REPLAY_TAG_MAX];
	msgpack_sbuffer entries;
	uint32_t nentries;
	long first_line, last_line;
	EVP_MD_CTX *md;
	/* figures */
	long lines, sent, skipped, chunks;
};

static int replay_connect(struct replay *r)
{
	struct megactl_conn_opts o = {
		.who = "megactl replay", .unix_path = r->tcp ? NULL : r->unix_path,
		.tcp = r->tcp, .shared_key = r->shared_key, .tls = r->tls,
		.insecure = r->insecure, .ca_file = r->ca, .cert_file = r->cert,
		.key_file = r->key, .timeout_s = r->timeout_s,
	};

	r->conn = megactl_conn_open(&o);
	return r->conn ? 0 : -1;
}

/* A HELO: what a listener with listen.shared_key says first, to a client
 * that was not told of the key (its events are refused, never acked). */
static bool replay_is_helo(const msgpack_object *o)
{
	const msgpack_object *first = o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size > 0 ?
				      &o->via.array.ptr[0] : NULL;

	return first && first->type == MSGPACK_OBJECT_STR && first->via.str.size == 4 &&
	       memcmp(first->via.str.ptr, "HELO", 4) == 0;
}

/* Read replies until {"ack": ID}. 0, or -1 (told why). */
static int replay_wait_ack(struct replay *r, const char *id)
{
	msgpack_unpacked up;
	int rc = -1;

	msgpack_unpacked_init(&up);
	for (;;) {
		ssize_t n;

		while (msgpack_unpacker_next(&r->unp, &up) == MSGPACK_UNPACK_SUCCESS) {
			const msgpack_object *ack = up.data.type == MSGPACK_OBJECT_MAP ?
						    replay_field(&up.data, "ack") : NULL;

			if (ack && ack->type == MSGPACK_OBJECT_STR &&
			    ack->via.str.size == strlen(id) &&
			    memcmp(ack->via.str.ptr, id, strlen(id)) == 0) {
				rc = 0;
				goto out;
			}
			if (replay_is_helo(&up.data)) {
				fprintf(stderr, "megactl replay: %s: the listener wants the shared-key "
					"handshake (listen.shared_key): give -c CONFIG or "
					"--shared-key-file PATH\n", r->tcp ? r->tcp : r->unix_path);
				goto out;
			}
		}
		if (!msgpack_unpacker_reserve_buffer(&r->unp, 65536))
			break;
		n = megactl_conn_recv(r->conn, msgpack_unpacker_buffer(&r->unp), 65536);
		if (n <= 0) {
			fprintf(stderr, "megactl replay: %s: lines %ld-%ld: %s\n", r->file,
				r->first_line, r->last_line, n == 0 ?
				"the daemon closed the connection before acknowledging them" :
				errno == EAGAIN ? "no ack within the timeout (is PostgreSQL away "
				"and the spool full?)" : megactl_conn_error(r->conn));
			break;
		}
		msgpack_unpacker_buffer_consumed(&r->unp, (size_t)n);
	}
out:
	msgpack_unpacked_destroy(&up);
	return rc;
}

/* The chunk id: a digest of the lines it carries (a rerun sends the same ids). */
static void replay_chunk_id(struct replay *r, char id[48])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (EVP_DigestFinal_ex(r->md, md, &len) != 1)
		len = 0;
	memcpy(id, "megactl-replay-", 15);
	for (unsigned i = 0; i < 16 && i < len; i++)
		snprintf(id + 15 + 2 * i, 3, "%02x", md[i]);
	id[15 + 2 * (len < 16 ? len : 16)] = '\0';
}

/* Send the chunk being built and wait for its ack. 0 or -1. */
static int replay_flush(struct replay *r)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	char id[48];
	size_t tlen = strlen(r->tag);
	int rc;

	if (r->nentries == 0)
		return 0;
	replay_chunk_id(r, id);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	rc = msgpack_pack_array(&pk, 3) || msgpack_pack_str(&pk, tlen) ||
	     msgpack_pack_str_body(&pk, r->tag, tlen) || msgpack_pack_array(&pk, r->nentries) ||
	     msgpack_sbuffer_write(&sb, r->entries.data, r->entries.size) ||
	     msgpack_pack_map(&pk, 1) || msgpack_pack_str(&pk, 5) ||
	     msgpack_pack_str_body(&pk, "chunk", 5) || msgpack_pack_str(&pk, strlen(id)) ||
	     msgpack_pack_str_body(&pk, id, strlen(id)) ? -1 : 0;
	if (rc == 0 && megactl_conn_send(r->conn, sb.data, sb.size) < 0) {
		fprintf(stderr, "megactl replay: %s: lines %ld-%ld: cannot send: %s\n", r->file,
			r->first_line, r->last_line, megactl_conn_error(r->conn));
		rc = -1;
	}
	msgpack_sbuffer_destroy(&sb);
	if (rc == 0)
		rc = replay_wait_ack(r, id);
	if (rc == 0) {
		r->sent += r->nentries;
		r->chunks++;
	}
	msgpack_sbuffer_clear(&r->entries);
	r->nentries = 0;
	return rc;
}

/* Add L (the text TEXT) to the chunk, sending the chunk first when its tag
 * differs or it is full. 0 or -1. */
static int replay_add(struct replay *r, const struct replay_line *l, const char *text,
		      size_t len, long lineno)
{
	uint32_t sec = (uint32_t)(l->time_ns / 1000000000LL);
	uint32_t nsec = (uint32_t)(l->time_ns % 1000000000LL);
	msgpack_packer pk;
	char t[8];

	if (r->nentries > 0 && (strcmp(r->tag, l->tag) != 0 ||
				r->nentries >= (uint32_t)r->chunk_lines) && replay_flush(r) < 0)
		return -1;
	if (r->nentries == 0) {
		snprintf(r->tag, sizeof(r->tag), "%s", l->tag);
		r->first_line = lineno;
		if (EVP_DigestInit_ex(r->md, EVP_sha256(), NULL) != 1)
			return -1;
	}
	r->last_line = lineno;
	if (EVP_DigestUpdate(r->md, text, len) != 1)
		return -1;
	/* [EventTime(sec, nsec), event]: the event as the line had it. */
	for (int i = 0; i < 4; i++) {
		t[i] = (char)(sec >> (24 - 8 * i));
		t[4 + i] = (char)(nsec >> (24 - 8 * i));
	}
	msgpack_packer_init(&pk, &r->entries, msgpack_sbuffer_write);
	if (msgpack_pack_array(&pk, 2) || msgpack_pack_ext(&pk, 8, 0) ||
	    msgpack_pack_ext_body(&pk, t, 8) || msgpack_pack_object(&pk, *l->event))
		return -1;
	r->nentries++;
	return 0;
}

/* Read FILE line by line and replay it. 0 when every sendable line was acked. */
static int replay_file(struct replay *r, FILE *in)
{
	char *text = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = 0;

	while (rc == 0 && (len = getline(&text, &cap, in)) >= 0) {
		struct replay_line l;
		char why[160];
		size_t col;

		r->lines++;
		while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue;
		msgpack_sbuffer_init(&l.sb);
		msgpack_unpacked_init(&l.up);
		if (replay_parse_line(text, (size_t)len, &l, why, sizeof(why), &col) < 0) {
			r->skipped++;
			if (col)
				fprintf(stderr, "megactl replay: %s:%ld:%zu: %s; line not sent\n",
					r->file, r->lines, col, why);
			else
				fprintf(stderr, "megactl replay: %s:%ld: %s; line not sent\n",
					r->file, r->lines, why);
		} else if (replay_add(r, &l, text, (size_t)len, r->lines) < 0) {
			rc = -1;
		}
		msgpack_unpacked_destroy(&l.up);
		msgpack_sbuffer_destroy(&l.sb);
	}
	if (rc == 0 && ferror(in)) {
		fprintf(stderr, "megactl replay: cannot read %s: %s\n", r->file, strerror(errno));
		rc = -1;
	}
	if (rc == 0)
		rc = replay_flush(r);
	free(text);
	return rc;
}

/* ---- the command ------------------------------------------------------------- */

static void replay_usage(FILE *out)
{
	fprintf(out,
		"usage: megactl replay [-c CONFIG] [--unix PATH | --tcp HOST:PORT] [--chunk N]\n"
		"                      [--timeout SECONDS] [--shared-key-file PATH]\n"
		"                      [--tls] [--ca FILE | --insecure] [--cert FILE [--key FILE]]\n"
		"                      FILE\n\n"
		"Send the events of a dead-letter file back through megaingestd, once what made\n"
		"them fail is fixed. Move dead-letter.jsonl aside first; lines that fail again\n"
		"land in a new dead-letter.jsonl. Exit 0 once every line was acknowledged.\n\n"
		"  -c, --config FILE   take the Unix socket (else the first TCP listener, with\n"
		"                      its shared_key and TLS) from the daemon's configuration\n"
		"      --unix PATH     the daemon's Unix socket (default %s)\n"
		"      --tcp HOST:PORT a TCP listener\n"
		"      --chunk N       lines per acknowledged chunk (default 500)\n"
		"      --timeout S     how long to wait for each ack (default 60)\n"
		"      --shared-key-file PATH\n"
		"                      run the shared-key handshake with the key in PATH\n"
		"                      (its first line; else listen.shared_key of -c)\n"
		"      --tls           TLS to the listener (on by itself when -c's has tls.cert)\n"
		"      --ca FILE       trust the CAs in FILE for the daemon's certificate\n"
		"                      (else listen.tls.ca of -c, else the system store)\n"
		"      --insecure      do not verify the daemon's certificate\n"
		"      --cert FILE     client certificate (PEM), for a listener with tls.ca\n"
		"      --key FILE      its key (default: in the --cert file)\n",
		REPLAY_DEFAULT_UNIX);
}

/* Take the handshake key and TLS of the config's listener where the
 * command line said nothing about them. */
static void replay_config_tcp(struct replay *r, const struct config *cfg)
{
	if (!r->key_file && cfg->listen_shared_key[0])
		r->shared_key = cfg->listen_shared_key;
	if (cfg->listen_tls_cert[0])
		r->tls = true;
	if (r->tls && !r->ca && !r->insecure && cfg->listen_tls_ca[0])
		r->ca = cfg->listen_tls_ca;
}

/* Where to send and how, from the daemon's config. 0 or -1 (told why). */
static int replay_from_config(struct replay *r, const char *path, struct config **cfg)
{
	*cfg = config_load(path, stderr);
	if (!*cfg) {
		fprintf(stderr, "megactl replay: %s: invalid configuration\n", path);
		return -1;
	}
	if (!r->unix_path && !r->tcp) {
		/* The Unix socket first: it needs neither key nor TLS. */
		if ((*cfg)->listen_unix[0])
			r->unix_path = (*cfg)->listen_unix;
		else if ((*cfg)->listen_tcp_count > 0)
			r->tcp = (*cfg)->listen_tcp[0];
		else {
			fprintf(stderr, "megactl replay: %s has no listener\n", path);
			return -1;
		}
	}
	if (r->tcp)
		replay_config_tcp(r, *cfg);
	return 0;
}

/* The TCP-only options make sense together. 0, or -1 (told why). */
static int replay_check_tcp_options(const struct replay *r)
{
	const char *why = NULL;

	if (r->unix_path && (r->tls || r->key_file || r->ca || r->insecure || r->cert))
		why = "--tls, --ca, --insecure, --cert and --shared-key-file are for --tcp";
	else if (r->ca && r->insecure)
		why = "--ca and --insecure contradict each other";
	else if (r->key && !r->cert)
		why = "--key needs --cert";
	if (why)
		fprintf(stderr, "megactl replay: %s\n", why);
	return why ? -1 : 0;
}

static int replay_options(struct replay *r, int argc, char **argv, const char **config)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "unix", required_argument, NULL, 'u' },
		{ "tcp", required_argument, NULL, 't' },
		{ "chunk", required_argument, NULL, 'n' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "shared-key-file", required_argument, NULL, 'k' },
		{ "tls", no_argument, NULL, 's' },
		{ "ca", required_argument, NULL, 'A' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "cert", required_argument, NULL, 'C' },
		{ "key", required_argument, NULL, 'K' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c': *config = optarg; break;
		case 'u': r->unix_path = optarg; break;
		case 't': r->tcp = optarg; break;
		case 'n': r->chunk_lines = atoi(optarg); break;
		case 'T': r->timeout_s = atoi(optarg); break;
		case 'k': r->key_file = optarg; break;
		case 's': r->tls = true; break;
		/* Naming whom to trust, or not to, only means something over TLS. */
		case 'A': r->ca = optarg; r->tls = true; break;
		case 'I': r->insecure = true; r->tls = true; break;
		case 'C': r->cert = optarg; r->tls = true; break;
		case 'K': r->key = optarg; break;
		case 'h': replay_usage(stdout); return MEGACTL_OK;
		default: replay_usage(stderr); return MEGACTL_USAGE;
		}
	}
	if (optind != argc - 1 || r->chunk_lines < 1 || r->chunk_lines > 100000 ||
	    r->timeout_s < 1 || (r->unix_path && r->tcp) || replay_check_tcp_options(r) < 0) {
		replay_usage(stderr);
		return MEGACTL_USAGE;
	}
	r->file = argv[optind];
	return -1;
}

/* Settle where to send and with which key. 0, or -1 (told why). */
static int replay_target(struct replay *r, const char *config, struct config **cfg,
			 char **key)
{
	if (config && replay_from_config(r, config, cfg) < 0)
		return -1;
	if (!r->unix_path && !r->tcp)
		r->unix_path = REPLAY_DEFAULT_UNIX;
	if (r->tcp && r->key_file) {
		if (megactl_conn_key_read("megactl replay", r->key_file, key) < 0)
			return -1;
		r->shared_key = *key;
	}
	return 0;
}

int megactl_replay(int argc, char **argv)
{
	struct replay r = { .chunk_lines = 500, .timeout_s = 60 };
	struct config *cfg = NULL;
	const char *config = NULL;
	char *key = NULL;
	FILE *in = NULL;
	int rc = replay_options(&r, argc, argv, &config);

	if (rc >= 0)
		return rc;
	rc = MEGACTL_FAIL;
	if (replay_target(&r, config, &cfg, &key) < 0)
		goto out;
	in = fopen(r.file, "re");
	if (!in) {
		fprintf(stderr, "megactl replay: cannot open %s: %s\n", r.file, strerror(errno));
		goto out;
	}
	msgpack_sbuffer_init(&r.entries);
	if (!msgpack_unpacker_init(&r.unp, 65536)) {
		fprintf(stderr, "megactl replay: out of memory\n");
		goto out_entries;
	}
	r.md = EVP_MD_CTX_new();
	if (r.md && replay_connect(&r) == 0 && replay_file(&r, in) == 0)
		rc = r.skipped ? MEGACTL_FAIL : MEGACTL_OK;
	printf("megactl replay: %s: %ld lines, %ld events sent and acknowledged in %ld chunks, "
	       "%ld lines not sendable%s\n", r.file, r.lines, r.sent, r.chunks, r.skipped,
	       r.sent ? "; events that fail again are in the daemon's new dead-letter.jsonl" : "");
	EVP_MD_CTX_free(r.md);
	msgpack_unpacker_destroy(&r.unp);
out_entries:
	msgpack_sbuffer_destroy(&r.entries);
out:
	if (in)
		fclose(in);
	megactl_conn_close(r.conn);
	megactl_conn_key_free(key);
	config_free(cfg);
	return rc;
}

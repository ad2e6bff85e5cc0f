/*
 * http_tokens.c: bearer tokens for the HTTP input.
 *
 * Tokens are kept padded to HTTP_TOKENS_LEN_MAX bytes with their lengths,
 * and a presented token is padded the same way, so every comparison is
 * CRYPTO_memcmp over the same number of bytes and the loop never stops
 * early: neither a token's content nor its length, nor which token
 * matched, shows in the time a request takes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "http_tokens.h"
#include "log.h"

struct http_tokens {
	size_t n;
	size_t len[HTTP_TOKENS_MAX];
	unsigned char tok[][HTTP_TOKENS_LEN_MAX];
};

/* Line LINE (NUL-terminated, no newline) without surrounding blanks. */
static char *http_tokens_trim(char *line)
{
	char *end = line + strlen(line);

	while (*line == ' ' || *line == '\t')
		line++;
	while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	return line;
}

/* One line of the file into T; 0, 1 (nothing on it), or -1 after logging. */
static int http_tokens_line(struct http_tokens *t, const char *path, int lineno, char *line)
{
	char *tok = http_tokens_trim(line);
	size_t len = strlen(tok);

	if (len == 0 || tok[0] == '#')
		return 1;
	if (len > HTTP_TOKENS_LEN_MAX || strpbrk(tok, " \t")) {
		log_error("http", "http.tokens_file %s line %d: a token is at most %d bytes and "
			  "holds no space", path, lineno, HTTP_TOKENS_LEN_MAX);
		return -1;
	}
	if (t->n == HTTP_TOKENS_MAX) {
		log_error("http", "http.tokens_file %s: more than %d tokens", path, HTTP_TOKENS_MAX);
		return -1;
	}
	memset(t->tok[t->n], 0, HTTP_TOKENS_LEN_MAX);
	memcpy(t->tok[t->n], tok, len);
	t->len[t->n++] = len;
	return 0;
}

struct http_tokens *http_tokens_load(const char *path)
{
	struct http_tokens *t = calloc(1, sizeof(*t) + (size_t)HTTP_TOKENS_MAX * HTTP_TOKENS_LEN_MAX);
	char line[HTTP_TOKENS_LEN_MAX + 64];
	FILE *f;
	int lineno = 0, rc = 0;

	if (!t) {
		log_error("http", "out of memory loading http.tokens_file");
		return NULL;
	}
	f = fopen(path, "re");
	if (!f) {
		log_error("http", "cannot open http.tokens_file %s: %s", path, strerror(errno));
		free(t);
		return NULL;
	}
	while (rc >= 0 && fgets(line, sizeof(line), f)) {
		size_t n = strlen(line);

		lineno++;
		if (n > 0 && line[n - 1] == '\n') {
			line[n - 1] = '\0';
		} else if (!feof(f)) {
			log_error("http", "http.tokens_file %s line %d: longer than a token may be "
				  "(%d bytes)", path, lineno, HTTP_TOKENS_LEN_MAX);
			rc = -1;
			break;
		}
		rc = http_tokens_line(t, path, lineno, line);
	}
	fclose(f);
	if (rc >= 0 && t->n == 0) {
		log_error("http", "http.tokens_file %s holds no token", path);
		rc = -1;
	}
	if (rc < 0) {
		http_tokens_free(t);
		return NULL;
	}
	return t;
}

void http_tokens_free(struct http_tokens *t)
{
	if (t)
		OPENSSL_cleanse(t, sizeof(*t) + (size_t)HTTP_TOKENS_MAX * HTTP_TOKENS_LEN_MAX);
	free(t);
}

bool http_tokens_allow(const struct http_tokens *t, const char *auth)
{
	unsigned char got[HTTP_TOKENS_LEN_MAX];
	unsigned match = 0;
	size_t len;

	if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
		return false;
	auth += 7;
	while (*auth == ' ')
		auth++;
	len = strlen(auth);
	if (len == 0 || len > HTTP_TOKENS_LEN_MAX)
		return false;
	memset(got, 0, sizeof(got));
	memcpy(got, auth, len);
	for (size_t i = 0; i < t->n; i++)
		match |= (unsigned)(CRYPTO_memcmp(got, t->tok[i], HTTP_TOKENS_LEN_MAX) == 0 &&
				    t->len[i] == len);
	OPENSSL_cleanse(got, sizeof(got));
	return match != 0;
}

/*
 * http_tokens: the bearer tokens of http.tokens_file (http_tokens.c), used
 * by http_input.c only.
 */
#ifndef MI_HTTP_TOKENS_H
#define MI_HTTP_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_TOKENS_MAX 256      /* tokens one file may hold */
#define HTTP_TOKENS_LEN_MAX 512  /* bytes of one token */

struct http_tokens;

/* Load PATH: one token a line; blank lines and lines starting with '#' are
 * skipped, spaces around a token are not part of it. NULL after logging
 * why (unreadable, empty, a token too long or holding a space). */
struct http_tokens *http_tokens_load(const char *path) __attribute__((warn_unused_result));
void http_tokens_free(struct http_tokens *t);

/* True when the Authorization header value AUTH (may be NULL) is
 * "Bearer <one of the tokens>". Compares against every token, each in
 * constant time, so the time taken says nothing about any of them. */
bool http_tokens_allow(const struct http_tokens *t, const char *auth);

#endif

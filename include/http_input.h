/*
 * http_input: the HTTP input, POST /v1/events on http.listen
 * (src/input/http/). Each request's events go through the intake under
 * one ack; the answer is sent once they are all committed or spooled.
 * Loop thread only.
 */
#ifndef MI_HTTP_INPUT_H
#define MI_HTTP_INPUT_H

#include <stddef.h>

struct config;
struct event_base;
struct intake;
struct http_input;

/* Serve http.listen of CFG on BASE, handing events to IN. NULL after
 * logging why (a port that cannot be bound, a TLS file or the tokens
 * file that cannot be read). */
struct http_input *http_input_start(struct event_base *base, const struct config *cfg,
				    struct intake *in) __attribute__((warn_unused_result));

/* Requests still waiting for their answer (shutdown waits for them). */
size_t http_input_waiting(const struct http_input *hi);

/* A reload: take the live keys of CFG (listen.max_event_bytes). HI may be NULL. */
void http_input_reconfigure(struct http_input *hi, const struct config *cfg);

/* Shutdown, after intake_stop: requests paused for room go on at once; the
 * intake refuses what they have left, so they are answered 503. HI may be
 * NULL. */
void http_input_stop(struct http_input *hi);

/* Close the listeners and connections. Answers still owed are not sent. */
void http_input_free(struct http_input *hi);

#endif

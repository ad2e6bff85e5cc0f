/*
 * admin_page: the status page's files, compiled into the daemon.
 *
 * src/admin_page/status.{html,js,css} are turned into byte arrays at build
 * time (src/admin_page/embed.sh), so the page works on a host with no
 * network and cannot drift from the daemon that serves it. admin.c serves
 * them at /, /status.js and /status.css under ADMIN_PAGE_CSP.
 */
#ifndef MI_ADMIN_PAGE_H
#define MI_ADMIN_PAGE_H

#include <stddef.h>

/* Only this origin's script, style and /stats; no inline code, no frames. */
#define ADMIN_PAGE_CSP \
	"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

struct admin_page_file {
	const char *path;          /* "/", "/status.js", ... */
	const char *content_type;
	const unsigned char *data;
	size_t len;
};

/* The file served at PATH into OUT: 0, or -1 when there is none. */
int admin_page_find(const char *path, struct admin_page_file *out)
	__attribute__((warn_unused_result));

#endif

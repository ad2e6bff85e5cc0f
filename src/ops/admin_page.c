/*
 * admin_page.c: the table of the status page's files (see admin_page.h).
 * The arrays come from admin_page_files.c, which embed.sh generates.
 */
#include <stddef.h>
#include <string.h>

#include "admin_page.h"

extern const unsigned char admin_page_status_html[], admin_page_status_js[],
	admin_page_status_css[];
extern const size_t admin_page_status_html_len, admin_page_status_js_len,
	admin_page_status_css_len;

static const struct {
	const char *path, *content_type;
	const unsigned char *data;
	const size_t *len;         /* defined in another file: not a constant here */
} admin_page_files[] = {
	{ "/", "text/html; charset=utf-8", admin_page_status_html, &admin_page_status_html_len },
	{ "/status.js", "text/javascript; charset=utf-8", admin_page_status_js,
	  &admin_page_status_js_len },
	{ "/status.css", "text/css; charset=utf-8", admin_page_status_css,
	  &admin_page_status_css_len },
};

int admin_page_find(const char *path, struct admin_page_file *out)
{
	for (size_t i = 0; i < sizeof(admin_page_files) / sizeof(admin_page_files[0]); i++)
		if (strcmp(path, admin_page_files[i].path) == 0) {
			out->path = admin_page_files[i].path;
			out->content_type = admin_page_files[i].content_type;
			out->data = admin_page_files[i].data;
			out->len = *admin_page_files[i].len;
			return 0;
		}
	return -1;
}

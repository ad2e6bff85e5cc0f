/*
 * json_yajl.h: the allocation functions every yajl parser here is given
 * (the HTTP input's body decoder, megactl replay). yajl never checks its own
 * allocations (a failure would be a NULL dereference inside it), so these
 * log the failure and abort instead; what yajl allocates is small: the
 * decoded form of one string and a byte per open container.
 */
#ifndef MI_JSON_YAJL_H
#define MI_JSON_YAJL_H

#include <yajl/yajl_common.h>

/* For yajl_alloc(); the same object every time (yajl copies it). */
yajl_alloc_funcs *json_yajl_alloc(void);

#endif

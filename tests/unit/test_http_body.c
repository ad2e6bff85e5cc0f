#include "../../src/input/http/http_body.h"
#include "unit.h"
int main(void) { return unit_done("test_http_body"); }

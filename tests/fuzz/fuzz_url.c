/* libFuzzer target: URL template expansion. Input: TEMPLATE \0 PLATFORM \0 CODE; only
 * validated platform/code values are expanded, as in production. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fq_fetch.h"
#include "fq_item.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 3);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';
    const char *tmpl = buf;
    /* Three NULs were appended, so each strlen below stops inside the buffer. */
    const char *platform = tmpl + strlen(tmpl) + 1;
    const char *code = platform + strlen(platform) + 1;
    if (!fq_item_platform_valid(platform))
        platform = "instagram";
    if (!fq_item_code_valid(code))
        code = "ABC123";
    char out[256];
    char errstr[256] = "";
    int index = size > 0 ? data[0] : 0;
    if (fq_url_expand(tmpl, platform, code, index, out, sizeof(out), errstr, sizeof(errstr)) == 0) {
        if (strlen(out) >= sizeof(out))
            abort();
    } else if (errstr[0] == '\0') {
        abort();
    }
    free(buf);
    return 0;
}

/* SHA-256 for S3 payload hashes and DLQ headers: libcrypto's EVP digest. */
#include "fq_http.h"

#include "fq_log.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <stdio.h>

void fq_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof(why));
        FQ_ERROR(NULL, "sha256: libcrypto EVP_Digest failed on %zu bytes: %s", len, why);
        out[0] = '\0';
        return;
    }
    for (unsigned int i = 0; i < md_len; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

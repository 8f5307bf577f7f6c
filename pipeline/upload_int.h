/* Internal to the uploader: its state, shared by upload.c (the API: begin, frames, manifest,
 * finish) and upload_transfer.c (file:// writes and the curl multi window of remote PUTs). */
#ifndef FQ_UPLOAD_INT_H
#define FQ_UPLOAD_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "fq_fetch.h"
#include "fq_upload.h"

#define UPLOAD_WINDOW   6 /* transfers in flight per uploader */
#define UPLOAD_ATTEMPTS 3 /* tries per object inside one call, before giving up */
#define REPLY_MAX       2048
#define URL_MAX         (FQ_VIDEO_URL_MAX + 1)

typedef enum dest_kind { DEST_FILE, DEST_S3, DEST_HTTP } dest_kind_t;

typedef struct slot {
    CURL *curl;
    bool busy;
    int attempts;
    uint8_t *data;
    size_t size, cap;
    const char *content_type;
    struct curl_slist *headers;
    char url[URL_MAX]; /* as stored (s3://..., http://..., no credentials) */
    char request_url[URL_MAX * 3 + 256];
    char sha256[65];
    char errbuf[CURL_ERROR_SIZE];
    char reply[REPLY_MAX];
    size_t reply_len;
} slot_t;

struct fq_upload {
    const fq_config_t *cfg;
    dest_kind_t kind;
    CURLM *multi;
    slot_t slots[UPLOAD_WINDOW];
    bool begun;
    bool failed;     /* an error was already handed to the caller for this item */
    fq_error_t *err; /* first failure of the current item, not yet handed out */
    char platform[FQ_PLATFORM_MAX + 1];
    char code[FQ_CODE_MAX + 1];
    fq_stored_frame_t *frames;
    size_t count, cap;
    char *manifest_url;
    unsigned tmp_counter;
};

/* upload_transfer.c */
/** The local path of a file:// URL ("./" kept relative); 0, or -1 when it is not one. */
int upload_file_path(const char *url, char *path, size_t path_size) FQ_WARN_UNUSED;
/** Writes one object to a file:// URL: parents created, written to a temporary name and
 *  renamed, so readers never see half a file. */
fq_error_t *upload_file_write(fq_upload_t *up, const char *url, const void *data,
                              size_t size) FQ_WARN_UNUSED;
/** Queues one object for the remote store, blocking while the window is full; NULL also when
 *  an earlier failure of the item is pending (the caller reports that one). */
fq_error_t *upload_queue_put(fq_upload_t *up, const char *url, const void *data, size_t size,
                             const char *content_type) FQ_WARN_UNUSED;
/** Runs the transfers until at most max_busy are in flight. */
void upload_drive(fq_upload_t *up, int max_busy);
/** Stops every transfer in flight. */
void upload_abort_all(fq_upload_t *up);

#endif /* FQ_UPLOAD_INT_H */

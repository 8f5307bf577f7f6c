/* libFuzzer target: the frame extractor on mutated videos (seeds are generated at run time by
 * tests/fuzz/test_fuzz.sh with the ffmpeg CLI). Small limits keep each run short; the
 * container and codec whitelists and the caps are production's. It runs inside a budget of
 * two cores, holding one as a worker's item does, so the idle one is lent: an input with IDR
 * pictures 4 s or longer is cut into chunks decoded on a helper thread (frames_split.c). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fq_config.h"
#include "fq_frames.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fq_error_t *count_frame(void *opaque, const fq_frame_t *frame)
{
    int *count = opaque;
    if (!frame->jpeg || frame->size == 0 || frame->width < 2 || frame->height < 2)
        abort();
    (*count)++;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fq_frames_t *fx;
    static fq_cores_t *cores;
    if (!fx) {
        /* the decoder surface and caps as production has them by default */
        fq_config_t *defaults = fq_config_new();
        if (!defaults)
            abort();
        fq_frames_opts_t opts;
        fq_frames_opts_from_config(&opts, defaults);
        opts.fps = 2;
        opts.max_dim = 64;
        opts.jpeg_quality = 10;
        opts.max_frames = 8;
        opts.max_seconds = 20;
        opts.threads = 1;
        opts.max_decode_ms = 5000; /* under libFuzzer's -timeout=10 */
        fx = fq_frames_new(&opts); /* copies what opts points to */
        fq_config_destroy(defaults);
        cores = fq_cores_new(2);
        if (!fx || !cores)
            abort();
        fq_frames_set_cores(fx, cores);
    }
    if (fq_cores_acquire(cores, NULL) != 0)
        abort();
    int fd = memfd_create("fuzz-video", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        int count = 0;
        fq_media_info_t info;
        fq_error_t *err = fq_frames_extract(fx, fd, count_frame, &count, &info);
        if (!err && count > 8)
            abort();
        fq_error_destroy(err);
    }
    close(fd);
    if (fq_cores_in_use(cores) != 1) /* every lent core came back */
        abort();
    fq_cores_release(cores, 1);
    return 0;
}

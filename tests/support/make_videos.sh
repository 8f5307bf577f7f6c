#!/usr/bin/env bash
# make_videos.sh OUTDIR — generates the shared test-video corpus with the ffmpeg CLI.
#
# Small sizes and short durations keep the whole corpus cheap to build on a shared 2-core
# machine. Idempotent: a file already present is kept (files are written to a temporary
# name first, so an interrupted run never leaves a half-written video behind).
# Prints the path of every file made (or already present), one per line, on stdout.
#
# Files (names are stable; other tests use them):
#   h264.mp4            1280x720 testsrc2, 6 s, 30 fps, GOP 2 s, B-frames, moov at the end
#   h264_faststart.mp4  the same with moov first
#   h264_opengop.mp4    h264.mp4 with open GOPs: its keyframes after the first are not IDR
#   hevc.mp4            640x360, 3 s (libx265, open GOP)
#   hevc_closed.mp4     640x360, 16 s, closed GOPs of 2 s: an IDR picture every 2 s (split runs)
#   vp9.webm            320x240, 3 s
#   mpeg4.avi           640x360, 3 s, 25 fps (MPEG-4 part 2)
#   av1.mkv             320x240, 2 s (only when libsvtav1 is there)
#   rotated90.mp4       640x360 coded, shown portrait through the rotate tag
#   rotated180.mp4, rotated270.mp4   the same stream with rotate tags 180 and 270
#   anamorphic.mp4      640x360 coded, sample aspect ratio 4:3 (shown 853x360), 2 s
#   vfr.mp4             640x360, 8 s, frame intervals alternating 1/30 s and 1/10 s
#   uhd.mp4             3840x2160, 1 s
#   long.mp4            160x90, 20 s, 10 fps (for MAX_VIDEO_SECONDS=10)
#   long_noduration.mkv the same in Matroska without duration or cues (written to a pipe)
#   audio_only.m4a      AAC only
#   empty.mp4           0 bytes
#   truncated.mp4       the first 40% of h264_faststart.mp4
#   truncated_header.mp4  its first 6000 bytes: headers, no whole frame
#   random.mp4          random bytes
#   text.mp4            a text file
#   scenes.mp4          320x180, black 1 s, testsrc2 2 s, white 1 s (two cuts)
#   tiny.mp4            one 64x64 frame
#   mpeg4.mp4           MPEG-4 part 2 in MP4 (an allowed container for an allowed codec)
# hostile input for the decoder surface (ALLOWED_CONTAINERS, ALLOWED_CODECS, caps):
#   playlist.m3u8       an HLS playlist naming a local file (file:///etc/passwd)
#   list.ffconcat       a concat script naming a local file
#   image.jpg           a JPEG image (image2 / jpeg_pipe)
#   raw.y4m             raw video in YUV4MPEG2
#   huge.mp4            one 8208x8208 H.264 frame (over 8192x8192 pixels)
#   noise.mkv           300 H.264 packets that decode to nothing (slices removed, AUDs kept)
#   mjpeg.mkv           Motion JPEG, a codec outside the default list
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"
command -v ffmpeg >/dev/null || { echo "make_videos.sh: ffmpeg not found" >&2; exit 1; }

ff() { SVT_LOG=1 ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }
has_encoder() { ffmpeg -hide_banner -encoders 2>/dev/null | grep -c " $1 " >/dev/null; }

tmp=""
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT

# make_one NAME CMD...: runs CMD with "$tmp" as its output path unless NAME exists.
make_one() {
    local name=$1
    shift
    local dst="$out/$name"
    if [ ! -e "$dst" ]; then
        tmp="$out/.tmp.$$.$name"
        "$@"
        mv -f "$tmp" "$dst"
        tmp=""
    fi
    echo "$dst"
}

x264_gop() { # 30 fps, 2 s GOP, B-frames, no scene-cut keyframes so the GOP is regular
    echo -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -bf 2 -pix_fmt yuv420p
}

gen_h264() {
    ff -f lavfi -i testsrc2=size=1280x720:rate=30:duration=6 $(x264_gop) -f mp4 "$tmp"
}
gen_h264_faststart() {
    ff -f lavfi -i testsrc2=size=1280x720:rate=30:duration=6 $(x264_gop) \
        -movflags +faststart -f mp4 "$tmp"
}
gen_h264_opengop() {
    ff -f lavfi -i testsrc2=size=1280x720:rate=30:duration=6 $(x264_gop) -x264-params open-gop=1 \
        -f mp4 "$tmp"
}
gen_hevc_closed() {
    ff -f lavfi -i testsrc2=size=640x360:rate=30:duration=16 -c:v libx265 -preset ultrafast \
        -x265-params log-level=error:keyint=60:min-keyint=60:scenecut=0:open-gop=0 \
        -pix_fmt yuv420p -tag:v hvc1 -f mp4 "$tmp"
}
gen_hevc() {
    ff -f lavfi -i testsrc2=size=640x360:rate=30:duration=3 -c:v libx265 -preset ultrafast \
        -x265-params log-level=error:keyint=60 -pix_fmt yuv420p -tag:v hvc1 -f mp4 "$tmp"
}
gen_vp9() {
    ff -f lavfi -i testsrc2=size=320x240:rate=30:duration=3 -c:v libvpx-vp9 -deadline realtime \
        -cpu-used 8 -b:v 300k -g 60 -pix_fmt yuv420p -f webm "$tmp"
}
gen_mpeg4() {
    ff -f lavfi -i testsrc2=size=640x360:rate=25:duration=3 -c:v mpeg4 -q:v 5 -g 50 -f avi "$tmp"
}
gen_av1() {
    ff -f lavfi -i testsrc2=size=320x240:rate=30:duration=2 -c:v libsvtav1 -preset 12 -g 60 \
        -pix_fmt yuv420p -f matroska "$tmp"
}
gen_rotated90() { # 640x360 coded, displayed portrait through the rotate tag (FFmpeg 5.1)
    local src="$out/.tmp.$$.rot_src.mp4"
    ff -f lavfi -i testsrc2=size=640x360:rate=30:duration=3 $(x264_gop) -f mp4 "$src"
    ff -i "$src" -c copy -metadata:s:v:0 rotate=90 -f mp4 "$tmp"
    rm -f "$src"
}
gen_rotated() { # $1 = degrees in the rotate tag; reuses rotated90.mp4's stream
    ff -i "$out/rotated90.mp4" -c copy -metadata:s:v:0 rotate="$1" -f mp4 "$tmp"
}
gen_anamorphic() { # 640x360 coded with a 4:3 sample aspect ratio: shown 853x360
    ff -f lavfi -i testsrc2=size=640x360:rate=30:duration=2 -vf setsar=4/3 \
        -c:v libx264 -preset ultrafast -g 30 -pix_fmt yuv420p -f mp4 "$tmp"
}
gen_vfr() { # per 20 input frames: 10 frames 1/30 s apart, then 10 frames 1/10 s apart (8 s)
    ff -f lavfi -i testsrc2=size=640x360:rate=30:duration=4 \
        -vf "setpts='(40*floor(N/20)+mod(N,20)+2*max(mod(N,20)-10,0))/30/TB'" \
        $(x264_gop) -vsync vfr -f mp4 "$tmp"
}
gen_uhd() {
    ff -f lavfi -i testsrc2=size=3840x2160:rate=30:duration=1 -c:v libx264 -preset ultrafast \
        -g 30 -pix_fmt yuv420p -f mp4 "$tmp"
}
gen_long() {
    ff -f lavfi -i testsrc2=size=160x90:rate=10:duration=20 -c:v libx264 -preset ultrafast \
        -g 20 -pix_fmt yuv420p -f mp4 "$tmp"
}
gen_long_noduration() { # long.mp4's content in Matroska written to a pipe: no duration, no cues
    ff -f lavfi -i testsrc2=size=160x90:rate=10:duration=20 -c:v libx264 -preset ultrafast \
        -g 20 -pix_fmt yuv420p -f matroska - >"$tmp"
}
gen_audio_only() {
    ff -f lavfi -i sine=frequency=440:duration=2 -c:a aac -b:a 64k -f mp4 "$tmp"
}
gen_empty() {
    : >"$tmp"
}
gen_truncated() {
    local src="$out/h264_faststart.mp4" size
    size=$(stat -c %s "$src")
    head -c $((size * 40 / 100)) "$src" >"$tmp"
}
gen_truncated_header() { # the moov box and not one whole frame
    head -c 6000 "$out/h264_faststart.mp4" >"$tmp"
}
gen_random() {
    head -c 200000 /dev/urandom >"$tmp"
}
gen_text() {
    for i in $(seq 1 200); do echo "line $i: this is a text file, not a video"; done >"$tmp"
}
gen_scenes() { # three shots: black 1 s, moving testsrc2 2 s, white 1 s (scene mode cuts)
    ff -f lavfi -i color=c=black:size=320x180:rate=25:duration=1 \
        -f lavfi -i testsrc2=size=320x180:rate=25:duration=2 \
        -f lavfi -i color=c=white:size=320x180:rate=25:duration=1 \
        -filter_complex "[0][1][2]concat=n=3:v=1:a=0" -c:v libx264 -preset ultrafast -g 25 \
        -pix_fmt yuv420p -f mp4 "$tmp"
}
gen_tiny() {
    ff -f lavfi -i testsrc2=size=64x64:rate=1:duration=1 -frames:v 1 -c:v libx264 \
        -preset ultrafast -pix_fmt yuv420p -f mp4 "$tmp"
}

gen_mpeg4_mp4() {
    ff -f lavfi -i testsrc2=size=320x240:rate=25:duration=2 -c:v mpeg4 -q:v 5 -f mp4 "$tmp"
}
gen_playlist() {
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n' >"$tmp"
}
gen_concat() {
    printf 'ffconcat version 1.0\nfile /etc/passwd\nfile ../../etc/shadow\n' >"$tmp"
}
gen_image() {
    ff -f lavfi -i testsrc2=size=320x240 -frames:v 1 -f image2 -c:v mjpeg "$tmp"
}
gen_raw() {
    ff -f lavfi -i testsrc2=size=64x48:rate=10:duration=1 -pix_fmt yuv420p -f yuv4mpegpipe "$tmp"
}
gen_huge() { # flat black, so one 67 Mpixel frame encodes in a moment and weighs little
    ff -f lavfi -i color=c=black:size=8208x8208:rate=1:duration=1 -frames:v 1 -c:v libx264 \
        -preset ultrafast -pix_fmt yuv420p -f mp4 "$tmp"
}
gen_noise() { # a sound container of 300 packets holding no picture: every slice NAL removed
    ff -f lavfi -i testsrc2=size=64x64:rate=30:duration=10 -c:v libx264 -preset ultrafast \
        -x264-params aud=1 -pix_fmt yuv420p -bsf:v 'filter_units=remove_types=1|5' \
        -f matroska "$tmp"
}
gen_mjpeg() {
    ff -f lavfi -i testsrc2=size=64x48:rate=10:duration=1 -c:v mjpeg -pix_fmt yuvj420p \
        -f matroska "$tmp"
}

make_one h264.mp4 gen_h264
make_one h264_faststart.mp4 gen_h264_faststart
make_one h264_opengop.mp4 gen_h264_opengop
make_one hevc.mp4 gen_hevc
make_one hevc_closed.mp4 gen_hevc_closed
make_one vp9.webm gen_vp9
make_one mpeg4.avi gen_mpeg4
if has_encoder libsvtav1; then
    make_one av1.mkv gen_av1
fi
make_one rotated90.mp4 gen_rotated90
make_one rotated180.mp4 gen_rotated 180
make_one rotated270.mp4 gen_rotated 270
make_one anamorphic.mp4 gen_anamorphic
make_one vfr.mp4 gen_vfr
make_one uhd.mp4 gen_uhd
make_one long.mp4 gen_long
make_one long_noduration.mkv gen_long_noduration
make_one audio_only.m4a gen_audio_only
make_one empty.mp4 gen_empty
make_one truncated.mp4 gen_truncated
make_one truncated_header.mp4 gen_truncated_header
make_one random.mp4 gen_random
make_one text.mp4 gen_text
make_one scenes.mp4 gen_scenes
make_one tiny.mp4 gen_tiny
make_one mpeg4.mp4 gen_mpeg4_mp4
make_one playlist.m3u8 gen_playlist
make_one list.ffconcat gen_concat
make_one image.jpg gen_image
make_one raw.y4m gen_raw
make_one huge.mp4 gen_huge
make_one noise.mkv gen_noise
make_one mjpeg.mkv gen_mjpeg

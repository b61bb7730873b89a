/* The forwarding fast path's per-packet work in C: one call per frame and subscriber.
 *
 * tc_send_frame() writes each RTP packet of a frame (12-byte header, the sender's
 * header-extension block, the payload), protects it in place with the sender's own libsrtp
 * session through the srtp_protect function pylibsrtp was built with (both passed in as
 * pointers, so the session state is the one aiortc's RTCP and retransmissions use), and sends
 * the batch with one sendmmsg(2) call. With `gso`, each run of equal-sized packets (a video
 * frame's packets are all the same size but the last) goes as ONE message with Linux's UDP
 * generic segmentation offload (UDP_SEGMENT, Linux 4.18+): the kernel walks its stack once
 * for the run and cuts it into the same datagrams at the end, about a third of the kernel's
 * cost per packet. Loaded with cffi's ABI mode (media/native_send.py); built by
 * scripts/setup-venv.sh with the system C compiler. No Python headers needed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define TC_MTU 1500        /* the largest packet before protection (as pylibsrtp's buffer) */
#define TC_SLOT 1664       /* one packet plus libsrtp's largest trailer (SRTP_MAX_TRAILER_LEN) */
#define TC_BATCH 64        /* packets per sendmmsg call */
#define TC_GSO_MAX 60000   /* bytes in one segmented message (an IPv4/IPv6 datagram's limit) */
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

/* srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) (libsrtp 2) */
typedef int (*tc_protect_fn)(void *ctx, void *rtp, int *len);

static unsigned char buffer[TC_BATCH * TC_SLOT]; /* a batch's packets, back to back */
static struct iovec iovs[TC_BATCH];
static struct mmsghdr msgs[TC_BATCH];
static union { /* one UDP_SEGMENT control message per message */
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} controls[TC_BATCH];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* cffi releases the GIL */

int tc_abi_version(void) { return 5; }

static int address(int family, const char *host, int port, struct sockaddr_storage *ss,
                   socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return -1;
        *len = sizeof(*a);
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return -1;
        *len = sizeof(*a);
        return 0;
    }
    return -1;
}

/* One message for packets [first, first + n) of the batch, `size` bytes each but the last;
 * segmented by the kernel (UDP_SEGMENT) when there are several. */
static void message(struct mmsghdr *m, struct iovec *iov, void *control, unsigned char *start,
                    size_t bytes, int n, int size, struct sockaddr_storage *ss, socklen_t sl)
{
    memset(m, 0, sizeof(*m));
    iov->iov_base = start;
    iov->iov_len = bytes;
    m->msg_hdr.msg_name = ss;
    m->msg_hdr.msg_namelen = sl;
    m->msg_hdr.msg_iov = iov;
    m->msg_hdr.msg_iovlen = 1;
    if (n > 1) {
        struct cmsghdr *c;
        uint16_t segment = (uint16_t)size;
        m->msg_hdr.msg_control = control;
        m->msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
        c = CMSG_FIRSTHDR(&m->msg_hdr);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &segment, sizeof(segment));
    }
}

/* Send `count` RTP packets of one frame: payload i is `lengths[i]` bytes (uint16, native byte
 * order) of `payloads`, sequence numbers from `seq`, the marker bit on the last one. With
 * `picture_id` >= 0, each payload's VP8 descriptor gets it (M bit + 15 bits) at byte
 * `picture_id_at`: the payloads are shared by every subscriber, the picture id is theirs.
 * With `abs_at` >= 0, the 3-byte abs-send-time `abs_send_time` is written at that offset of
 * the extension block (the block is the sender's, laid out once; the time is the frame's).
 * With `gso`, runs of equal-sized packets go as one segmented message each.
 *
 * out[0]: packets the kernel took; out[1]: protected bytes of those; out[2]: the errno that
 * stopped sending (EAGAIN when the socket buffer is full: the rest are dropped, as a full link
 * drops), or libsrtp's status when protection failed; out[3]: 1 when the kernel refused
 * segmentation (that batch was sent again packet by packet: the caller stops asking for it).
 * Returns 0, or -1 for a bad address, -2 for a packet too large (or `abs_at` outside the
 * extension block), -3 when libsrtp refused one
 * (nothing of the frame was sent in the last two cases but what went before).
 */
int tc_send_frame(int fd, int family, const char *host, int port, void *protect_fn,
                  void *srtp, int first, int pt, int seq, uint32_t ts, uint32_t ssrc,
                  const char *ext, int ext_len, const char *payloads, const char *lengths,
                  int count, int picture_id, int picture_id_at, int gso, int abs_at,
                  uint32_t abs_send_time, int *out)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    tc_protect_fn protect = (tc_protect_fn)protect_fn;
    size_t offset = 0;
    int i = 0, rc = 0;

    out[0] = out[1] = out[2] = out[3] = 0;
    if (abs_at > ext_len - 3)
        return -2;
    if (address(family, host, port, &ss, &sl) != 0)
        return -1;
    pthread_mutex_lock(&lock);
    while (i < count && rc == 0) {
        int n = 0, done = 0, nmsg = 0, m;
        int sizes[TC_BATCH];
        int msg_first[TC_BATCH + 1]; /* message k holds packets [msg_first[k], msg_first[k+1]) */
        size_t at = 0;
        for (; i < count && n < TC_BATCH; i++, n++) {
            uint16_t len;
            unsigned char *b = buffer + at;
            int size;
            memcpy(&len, lengths + 2 * (size_t)i, 2);
            size = 12 + ext_len + (int)len;
            if (size > TC_MTU || (picture_id >= 0 && (int)len < picture_id_at + 2)) {
                rc = -2;
                break;
            }
            b[0] = (unsigned char)first;
            b[1] = (unsigned char)(((i == count - 1) ? 0x80 : 0) | (pt & 0x7f));
            b[2] = (unsigned char)(seq >> 8);
            b[3] = (unsigned char)seq;
            b[4] = (unsigned char)(ts >> 24);
            b[5] = (unsigned char)(ts >> 16);
            b[6] = (unsigned char)(ts >> 8);
            b[7] = (unsigned char)ts;
            b[8] = (unsigned char)(ssrc >> 24);
            b[9] = (unsigned char)(ssrc >> 16);
            b[10] = (unsigned char)(ssrc >> 8);
            b[11] = (unsigned char)ssrc;
            memcpy(b + 12, ext, (size_t)ext_len);
            if (abs_at >= 0) {
                b[12 + abs_at] = (unsigned char)(abs_send_time >> 16);
                b[13 + abs_at] = (unsigned char)(abs_send_time >> 8);
                b[14 + abs_at] = (unsigned char)abs_send_time;
            }
            memcpy(b + 12 + ext_len, payloads + offset, len);
            offset += len;
            if (picture_id >= 0) {
                unsigned char *pid = b + 12 + ext_len + picture_id_at;
                pid[0] = (unsigned char)(0x80 | ((picture_id >> 8) & 0x7f));
                pid[1] = (unsigned char)picture_id;
            }
            if (protect(srtp, b, &size) != 0) {
                out[2] = 0;
                rc = -3;
                break;
            }
            sizes[n] = size;
            at += (size_t)size;
            seq = (seq + 1) & 0xffff;
        }
        /* messages: with gso, a run of equal sizes (and one smaller packet ending it) each */
        at = 0;
        for (int k = 0; k < n; nmsg++) {
            int start = k, run = 1;
            size_t bytes = (size_t)sizes[k];
            if (gso) {
                while (k + run < n && sizes[k + run] == sizes[k] &&
                       bytes + (size_t)sizes[k] <= TC_GSO_MAX) {
                    bytes += (size_t)sizes[k];
                    run++;
                }
                if (k + run < n && sizes[k + run] < sizes[k] &&
                    bytes + (size_t)sizes[k + run] <= TC_GSO_MAX) {
                    bytes += (size_t)sizes[k + run];
                    run++;
                }
            }
            message(&msgs[nmsg], &iovs[nmsg], controls[nmsg].buf, buffer + at, bytes, run,
                    sizes[start], &ss, sl);
            msg_first[nmsg] = start;
            at += bytes;
            k += run;
        }
        msg_first[nmsg] = n;
        for (m = 0; m < nmsg;) {
            int sent = sendmmsg(fd, msgs + m, (unsigned int)(nmsg - m), 0);
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                if (gso && msgs[m].msg_hdr.msg_controllen &&
                    (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT ||
                     errno == EOPNOTSUPP)) {
                    /* no segmentation on this path: the rest of the batch one by one */
                    int k2 = msg_first[m], left = 0;
                    unsigned char *p = (unsigned char *)msgs[m].msg_hdr.msg_iov->iov_base;
                    out[3] = 1;
                    gso = 0;
                    for (; k2 < n; k2++, left++) {
                        message(&msgs[m + left], &iovs[m + left], NULL, p, (size_t)sizes[k2],
                                1, sizes[k2], &ss, sl);
                        msg_first[m + left] = k2;
                        p += sizes[k2];
                    }
                    nmsg = m + left;
                    msg_first[nmsg] = n;
                    continue;
                }
                out[2] = errno;
                break;
            }
            for (int k = msg_first[m]; k < msg_first[m + sent]; k++)
                out[1] += sizes[k];
            m += sent;
        }
        done = msg_first[m];
        out[0] += done;
        if (done < n)
            break; /* the socket refused: the rest of the frame is dropped */
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

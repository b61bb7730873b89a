/* aiortc's receive-side bandwidth estimator (aiortc/rate.py: RemoteBitrateEstimator with its
 * RateCounter, InterArrival, OveruseEstimator, OveruseDetector and AimdRateControl), in C.
 *
 * It runs for every video packet a publisher sends with abs-send-time (aiortc publishers,
 * browsers without transport-cc): in Python it was the largest single part of the server's
 * interpreter time in the 8-party room. The arithmetic is aiortc's, step for step and in the
 * same order, on IEEE doubles as Python's floats are (built with -ffp-contract=off: no fused
 * multiply-add), with Python's round() as nearbyint() (ties to even) and int() as truncation,
 * so the estimates are the very same: tests/media/test_remb_filters.py compares every one
 * with aiortc's own estimator. The SSRC list a REMB carries stays in Python.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WINDOW 1000 /* RateCounter(1000, 8000): 1 ms buckets over 1 s */
#define SCALE 8000
#define BURST_DELTA_THRESHOLD_MS 5
#define MAX_ADAPT_OFFSET_MS 15
#define MIN_NUM_DELTAS 60
#define DELTA_COUNTER_MAX 1000
#define MIN_FRAME_PERIOD_HISTORY_LENGTH 60
#define INTER_ARRIVAL_SHIFT 26
#define TIMESTAMP_GROUP_LENGTH_MS 5

enum { NORMAL = 0, UNDERUSING = 1, OVERUSING = 2 };
enum { HOLD = 0, INCREASE = 1, DECREASE = 2 };

struct group {
    int64_t arrival_time;
    uint32_t first_timestamp, last_timestamp;
    int64_t size;
};

typedef struct tc_remb {
    /* RateCounter */
    int64_t counts[WINDOW], values[WINDOW];
    int origin_index, has_origin;
    int64_t origin_ms, total_count, total_value;
    int incoming_initialized;
    /* InterArrival */
    int has_current, has_previous;
    struct group current, previous;
    /* OveruseEstimator */
    double e00, e01, e10, e11;
    int num_of_deltas;
    double offset, previous_offset, slope;
    double history[MIN_FRAME_PERIOD_HISTORY_LENGTH];
    int history_len;
    double avg_noise, var_noise;
    /* OveruseDetector */
    int hypothesis, has_d_last_update, overuse_counter, has_overuse_time;
    int64_t d_last_update_ms;
    double overuse_time, d_previous_offset, threshold;
    /* AimdRateControl */
    int has_avg_max, current_initialized, has_first_time, has_last_change, near_max, state;
    double avg_max_kbps, var_max_kbps;
    int64_t current_bitrate, first_time, last_change_ms, latest_throughput;
    /* RemoteBitrateEstimator */
    int has_last_update;
    int64_t last_update_ms;
} tc_remb;

static const double TIMESTAMP_TO_MS = 1000.0 / (double)(1 << INTER_ARRIVAL_SHIFT);
static const int64_t GROUP_LENGTH = ((int64_t)TIMESTAMP_GROUP_LENGTH_MS << INTER_ARRIVAL_SHIFT) / 1000;

static void counter_reset(tc_remb *r)
{
    memset(r->counts, 0, sizeof(r->counts));
    memset(r->values, 0, sizeof(r->values));
    r->origin_index = 0;
    r->has_origin = 0;
    r->total_count = r->total_value = 0;
}

tc_remb *tc_remb_new(void)
{
    tc_remb *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->incoming_initialized = 1;
    r->e00 = 100.0;
    r->e11 = 0.1;
    r->slope = 1.0 / 64;
    r->var_noise = 50.0;
    r->hypothesis = NORMAL;
    r->threshold = 12.5;
    r->var_max_kbps = 0.4;
    r->current_bitrate = 30000000;
    r->latest_throughput = 30000000;
    r->state = HOLD;
    return r;
}

void tc_remb_free(tc_remb *r) { free(r); }

static int64_t pmod(int64_t a, int64_t m) { return ((a % m) + m) % m; }

static void erase_old(tc_remb *r, int64_t now_ms)
{
    int64_t steps = now_ms - WINDOW + 1 - r->origin_ms;
    if (steps <= 0)
        return;
    if (steps >= WINDOW) { /* every bucket passed */
        memset(r->counts, 0, sizeof(r->counts));
        memset(r->values, 0, sizeof(r->values));
        r->total_count = r->total_value = 0;
    } else {
        int i = r->origin_index;
        for (int64_t k = 0; k < steps; k++) {
            r->total_count -= r->counts[i];
            r->total_value -= r->values[i];
            r->counts[i] = r->values[i] = 0;
            i = (i + 1) % WINDOW;
        }
    }
    r->origin_index = (int)pmod(r->origin_index + steps, WINDOW);
    r->origin_ms += steps;
}

static void counter_add(tc_remb *r, int64_t value, int64_t now_ms)
{
    int64_t index;
    if (!r->has_origin) {
        r->origin_ms = now_ms;
        r->has_origin = 1;
    } else {
        erase_old(r, now_ms);
    }
    index = pmod(r->origin_index + now_ms - r->origin_ms, WINDOW);
    r->counts[index] += 1;
    r->values[index] += value;
    r->total_count += 1;
    r->total_value += value;
}

/* 1 and *rate, or 0 (None) */
static int counter_rate(tc_remb *r, int64_t now_ms, int64_t *rate)
{
    if (r->has_origin) {
        int64_t active;
        erase_old(r, now_ms);
        active = now_ms - r->origin_ms + 1;
        if (r->total_count > 0 && active > 1) {
            *rate = (int64_t)nearbyint((double)(SCALE * r->total_value) / (double)active);
            return 1;
        }
    }
    return 0;
}

/* InterArrival.compute_deltas: 1 with the deltas, or 0 */
static int compute_deltas(tc_remb *r, uint32_t timestamp, int64_t arrival, int64_t size,
                          int64_t *d_timestamp, int64_t *d_arrival, int64_t *d_size)
{
    int got = 0;
    struct group *g = &r->current;
    if (!r->has_current) {
        memset(g, 0, sizeof(*g));
        g->first_timestamp = g->last_timestamp = timestamp;
        r->has_current = 1;
    } else {
        uint32_t from_first = timestamp - g->first_timestamp;
        uint32_t from_last = timestamp - g->last_timestamp;
        int64_t from_last_ms, arrival_delta;
        int burst;
        if (from_first >= 0x80000000u)
            return 0; /* out of order */
        from_last_ms = (int64_t)nearbyint(TIMESTAMP_TO_MS * (double)from_last);
        arrival_delta = arrival - g->arrival_time;
        burst = from_last_ms == 0 ||
                (arrival_delta - from_last_ms < 0 && arrival_delta <= BURST_DELTA_THRESHOLD_MS);
        if (!burst && (int64_t)from_first > GROUP_LENGTH) {
            if (r->has_previous) {
                *d_timestamp = (int64_t)(uint32_t)(g->last_timestamp - r->previous.last_timestamp);
                *d_arrival = g->arrival_time - r->previous.arrival_time;
                *d_size = g->size - r->previous.size;
                got = 1;
            }
            r->previous = *g;
            r->has_previous = 1;
            memset(g, 0, sizeof(*g));
            g->first_timestamp = g->last_timestamp = timestamp;
        } else if (from_last > 0 && from_last < 0x80000000u) {
            g->last_timestamp = timestamp;
        }
    }
    g->size += size;
    g->arrival_time = arrival;
    return got;
}

static double min_frame_period(tc_remb *r, double ts_delta)
{
    double m = ts_delta;
    if (r->history_len >= MIN_FRAME_PERIOD_HISTORY_LENGTH) {
        memmove(r->history, r->history + 1, sizeof(double) * (size_t)(r->history_len - 1));
        r->history_len--;
    }
    for (int i = 0; i < r->history_len; i++)
        if (r->history[i] < m)
            m = r->history[i];
    r->history[r->history_len++] = ts_delta;
    return m;
}

static void update_noise(tc_remb *r, double residual, double ts_delta)
{
    double alpha = r->num_of_deltas > 10 * 30 ? 0.002 : 0.01;
    double beta = pow(1 - alpha, ts_delta * 30.0 / 1000.0);
    r->avg_noise = beta * r->avg_noise + (1 - beta) * residual;
    r->var_noise = beta * r->var_noise + (1 - beta) * pow(r->avg_noise - residual, 2.0);
    if (r->var_noise < 1)
        r->var_noise = 1;
}

static void estimator_update(tc_remb *r, int64_t time_delta_ms, double timestamp_delta_ms,
                             int64_t size_delta, int hypothesis)
{
    double mfp = min_frame_period(r, timestamp_delta_ms);
    double t_ts_delta = (double)time_delta_ms - timestamp_delta_ms;
    double h0 = (double)size_delta, h1 = 1.0;
    double eh0, eh1, residual, denom, k0, k1, ikh00, ikh01, ikh10, ikh11, e00, e01;

    r->num_of_deltas = r->num_of_deltas + 1 < DELTA_COUNTER_MAX ? r->num_of_deltas + 1
                                                               : DELTA_COUNTER_MAX;
    r->e00 += 1e-13;
    r->e11 += 1e-3;
    if ((hypothesis == OVERUSING && r->offset < r->previous_offset) ||
        (hypothesis == UNDERUSING && r->offset > r->previous_offset))
        r->e11 += 10 * 1e-3;
    eh0 = r->e00 * h0 + r->e01 * h1;
    eh1 = r->e10 * h0 + r->e11 * h1;
    residual = t_ts_delta - r->slope * h0 - r->offset;
    if (hypothesis == NORMAL) {
        double max_residual = 3.0 * sqrt(r->var_noise);
        if (fabs(residual) < max_residual)
            update_noise(r, residual, mfp);
        else
            update_noise(r, residual < 0 ? -max_residual : max_residual, mfp);
    }
    denom = r->var_noise + h0 * eh0 + h1 * eh1;
    k0 = eh0 / denom;
    k1 = eh1 / denom;
    ikh00 = 1.0 - k0 * h0;
    ikh01 = -k0 * h1;
    ikh10 = -k1 * h0;
    ikh11 = 1.0 - k1 * h1;
    e00 = r->e00;
    e01 = r->e01;
    r->e00 = e00 * ikh00 + r->e10 * ikh01;
    r->e01 = e01 * ikh00 + r->e11 * ikh01;
    r->e10 = e00 * ikh10 + r->e10 * ikh11;
    r->e11 = e01 * ikh10 + r->e11 * ikh11;
    r->previous_offset = r->offset;
    r->slope += k0 * residual;
    r->offset += k1 * residual;
}

static void update_threshold(tc_remb *r, double modified_offset, int64_t now_ms)
{
    double k;
    int64_t time_delta_ms;
    if (!r->has_d_last_update) {
        r->d_last_update_ms = now_ms;
        r->has_d_last_update = 1;
    }
    if (fabs(modified_offset) > r->threshold + MAX_ADAPT_OFFSET_MS) {
        r->d_last_update_ms = now_ms;
        return;
    }
    k = fabs(modified_offset) < r->threshold ? 0.039 : 0.0087;
    time_delta_ms = now_ms - r->d_last_update_ms;
    if (time_delta_ms > 100)
        time_delta_ms = 100;
    r->threshold += k * (fabs(modified_offset) - r->threshold) * (double)time_delta_ms;
    if (r->threshold > 600)
        r->threshold = 600;
    if (r->threshold < 6)
        r->threshold = 6;
    r->d_last_update_ms = now_ms;
}

static void detect(tc_remb *r, double offset, double timestamp_delta_ms, int num_of_deltas,
                   int64_t now_ms)
{
    double t;
    if (num_of_deltas < 2)
        return;
    t = (double)(num_of_deltas < MIN_NUM_DELTAS ? num_of_deltas : MIN_NUM_DELTAS) * offset;
    if (t > r->threshold) {
        if (!r->has_overuse_time) {
            r->overuse_time = timestamp_delta_ms / 2;
            r->has_overuse_time = 1;
        } else {
            r->overuse_time += timestamp_delta_ms;
        }
        r->overuse_counter += 1;
        if (r->overuse_time > 10 && r->overuse_counter > 1 && offset >= r->d_previous_offset) {
            r->overuse_counter = 0;
            r->overuse_time = 0;
            r->hypothesis = OVERUSING;
        }
    } else if (t < -r->threshold) {
        r->overuse_counter = 0;
        r->has_overuse_time = 0;
        r->hypothesis = UNDERUSING;
    } else {
        r->overuse_counter = 0;
        r->has_overuse_time = 0;
        r->hypothesis = NORMAL;
    }
    r->d_previous_offset = offset;
    update_threshold(r, t, now_ms);
}

static int64_t near_max_rate_increase(tc_remb *r)
{
    double bits_per_frame = (double)r->current_bitrate / 30;
    double packets_per_frame = ceil(bits_per_frame / (8 * 1200));
    double avg_packet_size_bits = bits_per_frame / packets_per_frame;
    int64_t v = (int64_t)((avg_packet_size_bits * 1000) / (200 + 100));
    return v > 4000 ? v : 4000;
}

static void update_max_throughput(tc_remb *r, double kbps)
{
    double alpha = 0.05, norm;
    if (!r->has_avg_max) {
        r->avg_max_kbps = kbps;
        r->has_avg_max = 1;
    } else {
        r->avg_max_kbps = (1 - alpha) * r->avg_max_kbps + alpha * kbps;
    }
    norm = r->avg_max_kbps > 1 ? r->avg_max_kbps : 1;
    r->var_max_kbps = (1 - alpha) * r->var_max_kbps +
                      alpha * pow(r->avg_max_kbps - kbps, 2.0) / norm;
    if (r->var_max_kbps > 2.5)
        r->var_max_kbps = 2.5;
    if (r->var_max_kbps < 0.4)
        r->var_max_kbps = 0.4;
}

/* AimdRateControl.update: 1 and *out, or 0 (None) */
static int rate_update(tc_remb *r, int usage, int has_throughput, int64_t throughput,
                       int64_t now_ms, int64_t *out)
{
    int64_t new_bitrate, max_bitrate;
    double kbps;
    if (!r->current_initialized && has_throughput) {
        if (!r->has_first_time) {
            r->first_time = now_ms;
            r->has_first_time = 1;
        } else if (now_ms - r->first_time > 3000) {
            r->current_bitrate = throughput;
            r->current_initialized = 1;
        }
    }
    if (!r->current_initialized && usage != OVERUSING)
        return 0;
    if (usage == NORMAL && r->state == HOLD) {
        r->last_change_ms = now_ms;
        r->has_last_change = 1;
        r->state = INCREASE;
    } else if (usage == OVERUSING) {
        r->state = DECREASE;
    } else if (usage == UNDERUSING) {
        r->state = HOLD;
    }
    new_bitrate = r->current_bitrate;
    if (has_throughput)
        r->latest_throughput = throughput;
    else
        throughput = r->latest_throughput;
    kbps = (double)throughput / 1000;
    if (r->state == INCREASE) {
        if (r->has_avg_max) {
            double sigma = sqrt(r->var_max_kbps * r->avg_max_kbps);
            if (kbps >= r->avg_max_kbps + 3 * sigma) {
                r->near_max = 0;
                r->has_avg_max = 0;
            }
        }
        if (r->near_max) {
            new_bitrate += (int64_t)((double)((now_ms - r->last_change_ms) *
                                              near_max_rate_increase(r)) / 1000);
        } else {
            double alpha = 1.08, increase;
            if (r->has_last_change) {
                int64_t elapsed = now_ms - r->last_change_ms;
                if (elapsed > 1000)
                    elapsed = 1000;
                alpha = pow(alpha, (double)elapsed / 1000);
            }
            increase = (alpha - 1) * (double)new_bitrate;
            new_bitrate += increase > 1000 ? (int64_t)increase : 1000;
        }
        r->last_change_ms = now_ms;
        r->has_last_change = 1;
    } else if (r->state == DECREASE) {
        if (r->has_avg_max) {
            double sigma = sqrt(r->var_max_kbps * r->avg_max_kbps);
            if (kbps < r->avg_max_kbps - 3 * sigma)
                r->has_avg_max = 0;
        }
        update_max_throughput(r, kbps);
        r->near_max = 1;
        new_bitrate = (int64_t)nearbyint(0.85 * (double)throughput);
        r->last_change_ms = now_ms;
        r->has_last_change = 1;
        r->state = HOLD;
    }
    max_bitrate = (int64_t)(1.5 * (double)throughput) + 10000;
    if (r->current_bitrate > max_bitrate)
        max_bitrate = r->current_bitrate;
    r->current_bitrate = new_bitrate < max_bitrate ? new_bitrate : max_bitrate;
    *out = r->current_bitrate;
    return 1;
}

/* RemoteBitrateEstimator.add: 1 with *bitrate (a REMB is due), or 0. */
int tc_remb_add(tc_remb *r, int64_t arrival_ms, uint32_t abs_send_time, int payload_size,
                int64_t *bitrate)
{
    uint32_t timestamp = abs_send_time << 8;
    int64_t rate, d_ts, d_arrival, d_size;
    int update = 0, has_rate;
    if (counter_rate(r, arrival_ms, &rate)) {
        r->incoming_initialized = 1;
    } else if (r->incoming_initialized) {
        counter_reset(r);
        r->incoming_initialized = 0;
    }
    counter_add(r, payload_size, arrival_ms);
    if (compute_deltas(r, timestamp, arrival_ms, payload_size, &d_ts, &d_arrival, &d_size)) {
        double timestamp_delta_ms = (double)d_ts * TIMESTAMP_TO_MS;
        estimator_update(r, d_arrival, timestamp_delta_ms, d_size, r->hypothesis);
        detect(r, r->offset, timestamp_delta_ms, r->num_of_deltas, arrival_ms);
    }
    if (!r->has_last_update || arrival_ms - r->last_update_ms > 500)
        update = 1;
    else if (r->hypothesis == OVERUSING)
        update = 1;
    if (update) {
        has_rate = counter_rate(r, arrival_ms, &rate);
        if (rate_update(r, r->hypothesis, has_rate, has_rate ? rate : 0, arrival_ms, bitrate)) {
            r->last_update_ms = arrival_ms;
            r->has_last_update = 1;
            return 1;
        }
    }
    return 0;
}

/* For the tests: the detector's hypothesis, and a state value by index (0 the Kalman filter's
 * offset, 1 its slope, 2 the noise variance, 3 the detector's threshold, 4 the rate control's
 * current bitrate, 5 its max-throughput variance). */
int tc_remb_hypothesis(const tc_remb *r) { return r->hypothesis; }
double tc_remb_state(const tc_remb *r, int which)
{
    switch (which) {
    case 0: return r->offset;
    case 1: return r->slope;
    case 2: return r->var_noise;
    case 3: return r->threshold;
    case 4: return (double)r->current_bitrate;
    case 5: return r->var_max_kbps;
    default: return NAN;
    }
}

/* The exact style swap's scoring passes (nststyle/swap_kernel.py), for one band of style rows: the patch scores
 * of every content patch from the pixel-product buffer G (content pixels x band pixels), divided by the style
 * patch norms, in one pass over G, where the PyTorch path makes 2k shifted-sum passes, a scaling pass and a max
 * pass over the whole buffer.
 *
 * nststyle_swap_band (float32 products) keeps the running best patch per content position. The sums run in the
 * PyTorch path's order (offsets dx inside, dy outside, left to right) and ties keep the lower index, so both
 * paths choose the same patches.
 *
 * nststyle_screen_band (bfloat16 products, from the matrix units of the CPU) keeps, per content position, every
 * patch whose score is within a factor `ratio` of the running best: the candidates the caller scores exactly. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const void *products;       /* height*width x length, row-major: float32 or bfloat16 (screening) */
    const float *inverse_norms; /* band_rows x style_width: 1/||patch|| at each patch corner of the band */
    float *best_score;          /* height*width, updated at the content patch corners */
    int64_t *best_index;        /* exact pass: the best patch; screening: unused */
    int64_t length, height, width, style_width, patch, stride, band_rows, first_row, style_columns;
    int64_t begin, end;         /* this thread's share of the content patch positions */
    /* screening only: per content patch position, up to `capacity` candidates (index, approximate score) */
    float ratio;
    int64_t capacity;
    int64_t *candidates;
    float *candidate_scores;
    int32_t *counts;            /* -1 once a position has overflowed its capacity */
} Job;

/* work(job t) for each of `threads` jobs of `job_size` bytes, on threads of their own but the first (the calling
 * thread's); a thread that cannot start has its share done here. 1 when any share failed (returned non-NULL). */
static int run_threads(void *jobs, size_t job_size, int threads, void *(*work)(void *)) {
    pthread_t handles[64];
    int created[64] = {0}, failed = 0;
    char *job = jobs;
    for (int t = 1; t < threads; t++)
        created[t] = pthread_create(&handles[t], NULL, work, job + t * job_size) == 0;
    if (work(job)) failed = 1;
    for (int t = 1; t < threads; t++) {
        void *result = NULL;
        if (created[t]) pthread_join(handles[t], &result);
        else result = work(job + t * job_size);
        if (result) failed = 1;
    }
    return failed;
}

/* at most 64 threads and one per item, at least one */
static int thread_count(int threads, int64_t items) {
    if (threads > 64) threads = 64;
    if (threads > items) threads = (int)items;
    return threads < 1 ? 1 : threads;
}

static inline float bf16_to_float(uint16_t value) {
    const uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

/* row_sum[c] = the patch sum of the band's style patch starting at (row, c) for the content patch at `pixel`:
 * G[pixel + dy*W + dx, (row + dy)*Ws + dx + c] summed over dy, dx, i.e. base[dy*(W*L + Ws) + dx*(L + 1) + c]. */
#define DEFINE_ROW_SUM(NAME, TYPE, LOAD)                                                                        \
static void NAME(const TYPE *restrict base, int64_t L, int64_t W, int64_t Ws, int64_t k, int64_t corners,     \
                 float *restrict row_sum, float *restrict patch_sum) {                                         \
    if (k == 3) {  /* the paper's 3 x 3 patches: the nine products summed in registers, same order */         \
        const TYPE *restrict g0 = base, *restrict g1 = g0 + W * L + Ws, *restrict g2 = g1 + W * L + Ws;        \
        const int64_t o1 = L + 1, o2 = 2 * (L + 1);                                                            \
        for (int64_t c = 0; c < corners; c++) {                                                               \
            const float t0 = (LOAD(g0[c]) + LOAD(g0[o1 + c])) + LOAD(g0[o2 + c]);                              \
            const float t1 = (LOAD(g1[c]) + LOAD(g1[o1 + c])) + LOAD(g1[o2 + c]);                              \
            const float t2 = (LOAD(g2[c]) + LOAD(g2[o1 + c])) + LOAD(g2[o2 + c]);                              \
            row_sum[c] = (t0 + t1) + t2;                                                                       \
        }                                                                                                      \
        return;                                                                                                \
    }                                                                                                          \
    for (int64_t dy = 0; dy < k; dy++) {                                                                       \
        const TYPE *restrict line = base + dy * (W * L + Ws);                                                  \
        for (int64_t c = 0; c < corners; c++) patch_sum[c] = LOAD(line[c]);                                    \
        for (int64_t dx = 1; dx < k; dx++) {                                                                   \
            const TYPE *restrict shifted = line + dx * (L + 1);                                                \
            for (int64_t c = 0; c < corners; c++) patch_sum[c] += LOAD(shifted[c]);                            \
        }                                                                                                      \
        if (dy == 0) {                                                                                         \
            for (int64_t c = 0; c < corners; c++) row_sum[c] = patch_sum[c];                                   \
        } else {                                                                                               \
            for (int64_t c = 0; c < corners; c++) row_sum[c] += patch_sum[c];                                  \
        }                                                                                                      \
    }                                                                                                          \
}

#define LOAD_FLOAT(x) (x)
DEFINE_ROW_SUM(row_sum_float, float, LOAD_FLOAT)
DEFINE_ROW_SUM(row_sum_bf16, uint16_t, bf16_to_float)

/* score[c] = row_sum[c] * inverse[c]; whether any score of the row exceeds `bar` (a vectorisable max over 16
 * lanes first: most rows hold no patch that matters) */
static int scale_row(const float *restrict row_sum, const float *restrict inverse, float *restrict score,
                     int64_t corners, float bar) {
    float lane[16];
    for (int j = 0; j < 16; j++) lane[j] = bar;
    for (int64_t c = 0; c < corners; c++) score[c] = row_sum[c] * inverse[c];
    int64_t c0 = 0;
    for (; c0 + 16 <= corners; c0 += 16)
        for (int j = 0; j < 16; j++) lane[j] = score[c0 + j] > lane[j] ? score[c0 + j] : lane[j];
    int above = 0;
    for (int j = 0; j < 16; j++) above |= lane[j] > bar;
    for (int64_t c = c0; c < corners; c++) above |= score[c] > bar;
    return above;
}

/* Buffers of one row of patch corners for a position's work (row sums, partial sums, scores). */
typedef struct { float *row_sum, *patch_sum, *score; } Rows;
typedef void (*PositionWork)(const Job *job, int64_t position, int64_t pixel, const Rows *rows);

/* `work` for each of this job's content patch positions, with the flat index of the patch's corner pixel */
static void *for_positions(const Job *job, PositionWork work) {
    const int64_t corners = job->style_width - job->patch + 1;
    const int64_t content_columns = (job->width - job->patch) / job->stride + 1;
    float *buffers = malloc(3 * sizeof(float) * (size_t)corners);
    if (!buffers) return (void *)1;
    const Rows rows = {buffers, buffers + corners, buffers + 2 * corners};
    for (int64_t position = job->begin; position < job->end; position++) {
        const int64_t pixel = (position / content_columns) * job->stride * job->width
                              + (position % content_columns) * job->stride;
        work(job, position, pixel, &rows);
    }
    free(buffers);
    return NULL;
}

/* The exact pass: the running best patch of one position over the band. */
static void score_position(const Job *job, int64_t position, int64_t pixel, const Rows *rows) {
    (void)position;
    const int64_t k = job->patch, s = job->stride, L = job->length, W = job->width, Ws = job->style_width;
    const int64_t corners = Ws - k + 1;
    const float *products = (const float *)job->products;
    float *restrict score = rows->score;
    float best = job->best_score[pixel];
    int64_t best_at = job->best_index[pixel];
    for (int64_t row = 0; row < job->band_rows; row++) {
        const int64_t style_row = job->first_row + row;
        if (style_row % s) continue;
        row_sum_float(products + pixel * L + row * Ws, L, W, Ws, k, corners, rows->row_sum, rows->patch_sum);
        if (!scale_row(rows->row_sum, job->inverse_norms + row * Ws, score, corners, best)) continue;
        for (int64_t c = 0; c < corners; c += s) {
            if (score[c] > best) {
                best = score[c];
                best_at = (style_row / s) * job->style_columns + c / s;
            }
        }
    }
    job->best_score[pixel] = best;
    job->best_index[pixel] = best_at;
}

/* The screening pass: the running best approximate score of one position and the patches within `ratio` of it.
 * A candidate is dropped once the best rises past it / ratio, so the list holds exactly the patches within
 * `ratio` of the final best; a position with more than `capacity` of them is marked (count -1). */
static void screen_position(const Job *job, int64_t position, int64_t pixel, const Rows *rows) {
    const int64_t k = job->patch, s = job->stride, L = job->length, W = job->width, Ws = job->style_width;
    const int64_t corners = Ws - k + 1, capacity = job->capacity;
    const float ratio = job->ratio;
    const uint16_t *products = (const uint16_t *)job->products;
    float *restrict score = rows->score;
    int64_t *restrict chosen = job->candidates + position * capacity;
    float *restrict chosen_score = job->candidate_scores + position * capacity;
    int32_t count = job->counts[position];
    float best = job->best_score[pixel];
    for (int64_t row = 0; row < job->band_rows; row++) {
        const int64_t style_row = job->first_row + row;
        if (style_row % s) continue;
        row_sum_bf16(products + pixel * L + row * Ws, L, W, Ws, k, corners, rows->row_sum, rows->patch_sum);
        /* bar: below it a score can be neither the best nor a candidate (the -inf start: any score) */
        const float bar = best > 0 ? best * ratio : best;
        if (!scale_row(rows->row_sum, job->inverse_norms + row * Ws, score, corners, bar) && best > 0) continue;
        for (int64_t c = 0; c < corners; c += s) {
            if (!(score[c] >= best * ratio) && !(score[c] > best)) continue;
            if (score[c] > best) {
                best = score[c];
                if (count > 0) {  /* drop the candidates the new best leaves behind */
                    int32_t kept = 0;
                    for (int32_t i = 0; i < count; i++) {
                        if (chosen_score[i] >= best * ratio) {
                            chosen[kept] = chosen[i];
                            chosen_score[kept++] = chosen_score[i];
                        }
                    }
                    count = kept;
                }
            }
            if (count < 0) continue;
            if (count == capacity) { count = -1; continue; }
            chosen[count] = (style_row / s) * job->style_columns + c / s;
            chosen_score[count++] = score[c];
        }
    }
    job->best_score[pixel] = best;
    job->counts[position] = count;
}

static void *score_positions(void *job) { return for_positions((const Job *)job, score_position); }
static void *screen_positions(void *job) { return for_positions((const Job *)job, screen_position); }

/* the content patch positions shared out over `threads` threads (the calling thread does the first share) */
static int run_jobs(Job *base, int threads, void *(*work)(void *)) {
    const int64_t positions = ((base->height - base->patch) / base->stride + 1) *
                              ((base->width - base->patch) / base->stride + 1);
    if (positions < 1) return 0;
    threads = thread_count(threads, positions);
    Job jobs[64];
    for (int t = 0; t < threads; t++) {
        jobs[t] = *base;
        jobs[t].begin = positions * t / threads;
        jobs[t].end = positions * (t + 1) / threads;
    }
    return run_threads(jobs, sizeof jobs[0], threads, work);
}

int nststyle_swap_band(const float *products, const float *inverse_norms, float *best_score, int64_t *best_index,
                       int64_t length, int64_t height, int64_t width, int64_t style_width, int64_t patch,
                       int64_t stride, int64_t band_rows, int64_t first_row, int64_t style_columns, int threads) {
    Job job = {products, inverse_norms, best_score, best_index, length, height, width, style_width, patch, stride,
               band_rows, first_row, style_columns, 0, 0, 0.0f, 0, NULL, NULL, NULL};
    return run_jobs(&job, threads, score_positions);
}

int nststyle_screen_band(const uint16_t *products, const float *inverse_norms, float *best_score,
                         int64_t *candidates, float *candidate_scores, int32_t *counts, float ratio, int64_t capacity,
                         int64_t length, int64_t height, int64_t width, int64_t style_width, int64_t patch,
                         int64_t stride, int64_t band_rows, int64_t first_row, int64_t style_columns, int threads) {
    Job job = {products, inverse_norms, best_score, NULL, length, height, width, style_width, patch, stride,
               band_rows, first_row, style_columns, 0, 0, ratio, capacity, candidates, candidate_scores, counts};
    return run_jobs(&job, threads, screen_positions);
}

/* nststyle_candidate_scores: the exact patch inner products <c, s> (every channel of every pixel of the k x k
 * patches) of content patches and each of their `count` candidate style patches, read from the maps as
 * pixels x channels tables at the patches' corner pixels: what the PyTorch path of _candidate_scores gathers
 * into buffers and multiplies, without the gathering. Sixteen partial sums per score (the vector lanes); the
 * caller divides by the style patch norms. */
typedef struct {
    const float *content, *style;   /* content pixels x channels, style pixels x channels */
    const int64_t *content_corners; /* positions: flat index of each content patch's corner pixel */
    const int64_t *style_corners;   /* positions x count: of each candidate style patch */
    float *scores;                  /* positions x count */
    int64_t count, channels, patch, width, style_width, begin, end;
} CandidateJob;

static void *score_candidates(void *argument) {
    const CandidateJob *job = argument;
    const int64_t channels = job->channels, k = job->patch;
    for (int64_t position = job->begin; position < job->end; position++) {
        for (int64_t j = 0; j < job->count; j++) {
            float lane[16] = {0}, tail = 0.0f;
            for (int64_t dy = 0; dy < k; dy++)
                for (int64_t dx = 0; dx < k; dx++) {
                    const float *c = job->content + (job->content_corners[position] + dy * job->width + dx) * channels;
                    const float *s = job->style
                                     + (job->style_corners[position * job->count + j] + dy * job->style_width + dx)
                                       * channels;
                    int64_t channel = 0;
                    for (; channel + 16 <= channels; channel += 16)
                        for (int l = 0; l < 16; l++) lane[l] += c[channel + l] * s[channel + l];
                    for (; channel < channels; channel++) tail += c[channel] * s[channel];
                }
            float sum = tail;
            for (int l = 0; l < 16; l++) sum += lane[l];
            job->scores[position * job->count + j] = sum;
        }
    }
    return NULL;
}

void nststyle_candidate_scores(const float *content, const float *style, const int64_t *content_corners,
                               const int64_t *style_corners, float *scores, int64_t positions, int64_t count,
                               int64_t channels, int64_t patch, int64_t width, int64_t style_width, int threads) {
    threads = thread_count(threads, positions);
    CandidateJob jobs[64];
    for (int t = 0; t < threads; t++)
        jobs[t] = (CandidateJob){content, style, content_corners, style_corners, scores, count, channels, patch,
                                 width, style_width, positions * t / threads, positions * (t + 1) / threads};
    run_threads(jobs, sizeof jobs[0], threads, score_candidates);
}

/* nststyle_rank_candidates: the approximate search's first stage in one pass, without the score matrix. For
 * every content patch, the `count` style patches with the highest approximate scores <q, k> (bfloat16 operands
 * of `pairs` * 2 dimensions, float32 sums: AVX512-BF16's dot products). The scores of a tile of 6 content
 * patches x 64 style patches stay in 24 vector registers; a lane enters a content patch's list only when it
 * beats the list's lowest score (a masked compare), so the selection costs little beside the products.
 * Blocking: a block of style patches (`STYLE_BLOCK`, its keys ~200 KB, in the L2 cache) meets every content
 * tile of the thread's range before the next block. Returns -1 when compiled without AVX512-BF16. */
#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#include <math.h>
#define TILE_CONTENT 6
#define TILE_VECTORS 4                /* x 16 lanes: 64 style patches per tile (swap_kernel.RANK_TILE pads to it) */
#define STYLE_BLOCK 1024              /* style patches per block (a multiple of the tile) */

typedef struct {
    const uint16_t *keys;      /* style blocks of 16: [Ns_padded / 16][pairs][16][2], bfloat16 */
    const uint32_t *queries;   /* content patches x pairs, each uint32 two bfloat16 dimensions */
    int64_t *candidates;       /* content patches x count */
    float *scores;             /* content patches x count: work space */
    int64_t pairs, count, n_style, n_style_padded, begin, end;
} RankJob;

static inline void offer(float *scores, int64_t *indices, int64_t count, int64_t *filled, float *threshold,
                         float score, int64_t index) {
    int64_t slot;
    if (*filled < count) {
        slot = (*filled)++;
    } else {
        slot = 0;
        for (int64_t j = 1; j < count; j++) if (scores[j] < scores[slot]) slot = j;
    }
    scores[slot] = score;
    indices[slot] = index;
    if (*filled == count) {
        float lowest = scores[0];
        for (int64_t j = 1; j < count; j++) if (scores[j] < lowest) lowest = scores[j];
        *threshold = lowest;
    }
}

static void *rank_candidates(void *argument) {
    const RankJob *job = argument;
    const int64_t pairs = job->pairs, count = job->count;
    const int64_t n = job->end - job->begin;
    float *threshold = malloc(sizeof(float) * (n > 0 ? n : 1));
    int64_t *filled = calloc(n > 0 ? n : 1, sizeof(int64_t));
    if (!threshold || !filled) { free(threshold); free(filled); return (void *)1; }
    for (int64_t i = 0; i < n; i++) threshold[i] = -INFINITY;
    for (int64_t block = 0; block < job->n_style_padded; block += STYLE_BLOCK) {
        const int64_t block_end = block + STYLE_BLOCK < job->n_style_padded ? block + STYLE_BLOCK : job->n_style_padded;
        for (int64_t c0 = job->begin; c0 < job->end; c0 += TILE_CONTENT) {
            const int64_t rows = job->end - c0 < TILE_CONTENT ? job->end - c0 : TILE_CONTENT;
            const uint32_t *q[TILE_CONTENT];
            for (int r = 0; r < TILE_CONTENT; r++) q[r] = job->queries + (c0 + (r < rows ? r : 0)) * pairs;
            for (int64_t s0 = block; s0 < block_end; s0 += 16 * TILE_VECTORS) {
                __m512 acc[TILE_VECTORS][TILE_CONTENT];
                for (int v = 0; v < TILE_VECTORS; v++)
                    for (int r = 0; r < TILE_CONTENT; r++) acc[v][r] = _mm512_setzero_ps();
                const uint16_t *k = job->keys + (s0 / 16) * pairs * 32;
                for (int64_t p = 0; p < pairs; p++) {
                    __m512bh key[TILE_VECTORS];
                    for (int v = 0; v < TILE_VECTORS; v++)
                        key[v] = (__m512bh)_mm512_loadu_si512((const void *)(k + (v * pairs + p) * 32));
                    for (int r = 0; r < TILE_CONTENT; r++) {
                        const __m512bh query = (__m512bh)_mm512_set1_epi32((int)q[r][p]);
                        for (int v = 0; v < TILE_VECTORS; v++) acc[v][r] = _mm512_dpbf16_ps(acc[v][r], key[v], query);
                    }
                }
                for (int r = 0; r < rows; r++) {
                    const int64_t local = c0 - job->begin + r;
                    float *list_scores = job->scores + (c0 + r) * count;
                    int64_t *list_indices = job->candidates + (c0 + r) * count;
                    __m512 top = acc[0][r];  /* one compare per content patch and tile: hits are rare */
                    for (int v = 1; v < TILE_VECTORS; v++) top = _mm512_max_ps(top, acc[v][r]);
                    if (!_mm512_cmp_ps_mask(top, _mm512_set1_ps(threshold[local]), _CMP_GT_OQ)) continue;
                    for (int v = 0; v < TILE_VECTORS; v++) {
                        __mmask16 above = _mm512_cmp_ps_mask(acc[v][r], _mm512_set1_ps(threshold[local]), _CMP_GT_OQ);
                        if (!above) continue;
                        float lane[16];
                        _mm512_storeu_ps(lane, acc[v][r]);
                        while (above) {
                            const int l = __builtin_ctz(above);
                            above &= above - 1;
                            const int64_t index = s0 + v * 16 + l;
                            if (index < job->n_style && lane[l] > threshold[local])
                                offer(list_scores, list_indices, count, &filled[local], &threshold[local], lane[l],
                                      index);
                        }
                    }
                }
            }
        }
    }
    free(threshold);
    free(filled);
    return NULL;
}

int nststyle_rank_candidates(const uint16_t *keys, const uint32_t *queries, int64_t *candidates, float *scores,
                             int64_t n_content, int64_t n_style, int64_t n_style_padded, int64_t pairs, int64_t count,
                             int threads) {
    threads = thread_count(threads, n_content);
    RankJob jobs[64];
    for (int t = 0; t < threads; t++)
        jobs[t] = (RankJob){keys, queries, candidates, scores, pairs, count, n_style, n_style_padded,
                            n_content * t / threads, n_content * (t + 1) / threads};
    return run_threads(jobs, sizeof jobs[0], threads, rank_candidates);
}

int nststyle_rank_supported(void) { return 1; }
#else
int nststyle_rank_candidates(const uint16_t *keys, const uint32_t *queries, int64_t *candidates, float *scores,
                             int64_t n_content, int64_t n_style, int64_t n_style_padded, int64_t pairs, int64_t count,
                             int threads) {
    (void)keys; (void)queries; (void)candidates; (void)scores; (void)n_content; (void)n_style;
    (void)n_style_padded; (void)pairs; (void)count; (void)threads;
    return -1;
}

int nststyle_rank_supported(void) { return 0; }
#endif

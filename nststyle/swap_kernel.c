/* The exact style swap's scoring pass (nststyle/swap_kernel.py): for one band of style rows, the patch scores
 * of every content patch from the pixel-product buffer G (content pixels x band pixels), divided by the style
 * patch norms, and the running best patch per content position -- in one pass over G, where the PyTorch
 * path makes 2k shifted-sum passes, a scaling pass and a max pass over the whole buffer. The sums run in
 * the PyTorch path's order (offsets dx inside, dy outside, left to right) and ties keep the lower index,
 * so both paths choose the same patches. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const float *products;      /* height*width x length, row-major */
    const float *inverse_norms; /* band_rows x style_width: 1/||patch|| at each patch corner of the band */
    float *best_score;          /* height*width, updated at the content patch corners */
    int64_t *best_index;
    int64_t length, height, width, style_width, patch, stride, band_rows, first_row, style_columns;
    int64_t begin, end;         /* this thread's share of the content patch positions */
} Job;

static void *score_positions(void *argument) {
    const Job *job = (const Job *)argument;
    const int64_t k = job->patch, s = job->stride, L = job->length, W = job->width, Ws = job->style_width;
    const int64_t content_columns = (W - k) / s + 1, corners = Ws - k + 1;
    float *restrict row_sum = malloc(sizeof(float) * (size_t)corners);
    float *restrict patch_sum = malloc(sizeof(float) * (size_t)corners);
    float *restrict score = malloc(sizeof(float) * (size_t)corners);
    if (!row_sum || !patch_sum || !score) { free(row_sum); free(patch_sum); free(score); return (void *)1; }
    for (int64_t position = job->begin; position < job->end; position++) {
        const int64_t pixel = (position / content_columns) * s * W + (position % content_columns) * s;
        float best = job->best_score[pixel];
        int64_t best_at = job->best_index[pixel];
        for (int64_t row = 0; row < job->band_rows; row++) {
            const int64_t style_row = job->first_row + row;
            if (style_row % s) continue;
            if (k == 3) {  /* the paper's 3 x 3 patches: the nine products summed in registers, same order */
                const float *restrict g0 = job->products + pixel * L + row * Ws;
                const float *restrict g1 = g0 + W * L + Ws, *restrict g2 = g1 + W * L + Ws;
                const int64_t o1 = L + 1, o2 = 2 * (L + 1);
                for (int64_t c = 0; c < corners; c++) {
                    const float t0 = (g0[c] + g0[o1 + c]) + g0[o2 + c];
                    const float t1 = (g1[c] + g1[o1 + c]) + g1[o2 + c];
                    const float t2 = (g2[c] + g2[o1 + c]) + g2[o2 + c];
                    row_sum[c] = (t0 + t1) + t2;
                }
            } else for (int64_t dy = 0; dy < k; dy++) {
                /* G[pixel + dy*W + dx, (row + dy)*Ws + dx + c] = base[dx*(L + 1) + c] */
                const float *restrict base = job->products + (pixel + dy * W) * L + (row + dy) * Ws;
                for (int64_t c = 0; c < corners; c++) patch_sum[c] = base[c];
                for (int64_t dx = 1; dx < k; dx++) {
                    const float *restrict shifted = base + dx * (L + 1);
                    for (int64_t c = 0; c < corners; c++) patch_sum[c] += shifted[c];
                }
                if (dy == 0) {
                    for (int64_t c = 0; c < corners; c++) row_sum[c] = patch_sum[c];
                } else {
                    for (int64_t c = 0; c < corners; c++) row_sum[c] += patch_sum[c];
                }
            }
            const float *restrict inverse = job->inverse_norms + row * Ws;
            /* a vectorisable max over 16 lanes first: most rows hold no better patch */
            float lane[16];
            for (int j = 0; j < 16; j++) lane[j] = best;
            for (int64_t c = 0; c < corners; c++) score[c] = row_sum[c] * inverse[c];
            int64_t c0 = 0;
            for (; c0 + 16 <= corners; c0 += 16)
                for (int j = 0; j < 16; j++) lane[j] = score[c0 + j] > lane[j] ? score[c0 + j] : lane[j];
            int better = 0;
            for (int j = 0; j < 16; j++) better |= lane[j] > best;
            for (int64_t c = c0; c < corners; c++) better |= score[c] > best;
            if (!better) continue;
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
    free(row_sum);
    free(patch_sum);
    free(score);
    return NULL;
}

int nststyle_swap_band(const float *products, const float *inverse_norms, float *best_score, int64_t *best_index,
                       int64_t length, int64_t height, int64_t width, int64_t style_width, int64_t patch,
                       int64_t stride, int64_t band_rows, int64_t first_row, int64_t style_columns, int threads) {
    const int64_t positions = ((height - patch) / stride + 1) * ((width - patch) / stride + 1);
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (threads > positions) threads = (int)positions;
    Job jobs[64];
    pthread_t handles[64];
    int created[64] = {0}, failed = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (Job){products, inverse_norms, best_score, best_index, length, height, width, style_width, patch,
                        stride, band_rows, first_row, style_columns, positions * t / threads,
                        positions * (t + 1) / threads};
    }
    for (int t = 1; t < threads; t++)
        created[t] = pthread_create(&handles[t], NULL, score_positions, &jobs[t]) == 0;
    if (score_positions(&jobs[0])) failed = 1;
    for (int t = 1; t < threads; t++) {
        void *result = NULL;
        if (created[t]) { pthread_join(handles[t], &result); if (result) failed = 1; }
        else if (score_positions(&jobs[t])) failed = 1;  /* no thread: do its share here */
    }
    return failed;
}

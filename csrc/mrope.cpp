// CPU twin of the M-RoPE position kernel (c4u/mrope.h): walks each row's spans in order.
#include <algorithm>

#include "c4u/mrope.h"

namespace c4u {

void mrope_positions_cpu(const MropeArgs& a) {
  std::fill(a.out, a.out + 3 * a.batch * a.seq, int64_t(0));
  for (int64_t b = 0; b < a.batch; ++b) {
    for (int32_t span = a.row_spans[b]; span < a.row_spans[b + 1]; ++span) {
      const int32_t* g = a.grid + 3 * span;
      for (int64_t k = 0; k < a.length[span]; ++k) {
        const int64_t s = a.slot_start[span] + k, base = a.pos_start[span];
        int64_t p[3];
        if (g[0] == 0) {
          p[0] = p[1] = p[2] = base + k;
        } else {
          p[0] = base + k / (static_cast<int64_t>(g[1]) * g[2]);
          p[1] = base + (k / g[2]) % g[1];
          p[2] = base + k % g[2];
        }
        for (int axis = 0; axis < 3; ++axis) a.out[(axis * a.batch + b) * a.seq + s] = p[axis];
      }
    }
  }
}

}  // namespace c4u

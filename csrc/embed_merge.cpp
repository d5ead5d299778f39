// CPU twin of the embedding merge (c4u/embed_merge.h): one memcpy per token row.
#include <cstring>

#include "c4u/embed_merge.h"

namespace c4u {

void embed_merge_cpu(const EmbedMergeArgs& a) {
  const int64_t row = a.hidden * a.elem_bytes;
  const auto* table = static_cast<const unsigned char*>(a.table);
  const auto* images = static_cast<const unsigned char*>(a.image_embeds);
  auto* out = static_cast<unsigned char*>(a.out);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int32_t img = a.image_index[t];
    const unsigned char* src = img >= 0 ? images + img * row : table + static_cast<int64_t>(a.ids[t]) * row;
    std::memcpy(out + t * row, src, static_cast<size_t>(row));
  }
}

}  // namespace c4u

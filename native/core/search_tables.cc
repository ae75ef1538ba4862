// The portable search's tables, filled from the CPU engine's grids so both read the same numbers.
#include "block_search_portable.h"

namespace calib {
namespace port {

void fill_tables(Tables* t) {
  const Elem elems[3] = {Elem::E2M1, Elem::E4M3, Elem::E5M2};
  for (int e = 0; e < 3; ++e) {
    const Grid& g = grid_of(elems[e]);
    GridTable& d = t->grid[e];
    d = GridTable{};
    d.K = g.K;
    for (int k = 0; k <= g.K; ++k) {
      d.value[k] = g.value[size_t(k)];
      d.mid[k] = g.mid[size_t(k)];
      d.inv_mid[k] = g.inv_mid[size_t(k)];
      d.d_val[k] = g.d_val[size_t(k)];
      d.d_sq[k] = g.d_sq[size_t(k)];
    }
  }
  for (int c = 0; c < 127; ++c) {
    t->e4m3_value[c] = e4m3_decode(uint8_t(c));
    t->e4m3_halvable[c] = e4m3_halvable(uint8_t(c)) ? 1 : 0;
  }
}

const Tables& host_tables() {
  static const Tables t = [] {
    Tables x;
    fill_tables(&x);
    return x;
  }();
  return t;
}

}  // namespace port
}  // namespace calib

// getrusage-based process statistics.
#include "core/sysinfo.h"

#include <sys/resource.h>

namespace qf {

int64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports kilobytes
}

}  // namespace qf

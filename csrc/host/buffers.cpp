#include "buffers.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <mutex>
#include <vector>

namespace sparseprune {
namespace host {
namespace {

// Note [Large CPU buffers]
// The weight-sized tensors the mask ops allocate every step (the masked weight, its gradient
// buffer, the score and weight gradients) are far above glibc's mmap threshold (32 MiB at most),
// so with the default allocator each is a fresh mmap: one page fault and a page zeroing per
// 4 KiB, every step, which made the user's path 2-3x slower than the raw op run with allocator
// tunables (issue 18). Here such a buffer is a block of whole 2 MiB huge pages (madvise
// MADV_HUGEPAGE: one fault per 2 MiB where the kernel allows transparent huge pages), and a freed
// block goes back to a small pool (at most kPoolBlocks blocks and kPoolBytes in all), from which
// a request of the same rounded size is served without faults. Blocks beyond those bounds are
// unmapped at once, so what the pool holds is bounded; tensors are ordinary CPU tensors
// (resizable, through this allocator).
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kPoolBlocks = 8;
constexpr size_t kPoolBytes = size_t{512} << 20;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct Block {
  void* base;       // what mmap returned
  size_t length;    // what was mapped
  void* data;       // 2 MiB aligned, `capacity` bytes
  size_t capacity;
};

class PooledAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return c10::GetCPUAllocator()->allocate(0);
    const size_t capacity = round_up(n, kHugePage);
    Block* block = take(capacity);
    if (!block) block = map(capacity);
    if (!block) return c10::GetCPUAllocator()->allocate(n);  // no mapping: the usual allocator
    return {block->data, block, &PooledAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static std::mutex& lock() {
    static std::mutex* m = new std::mutex;  // never destroyed: blocks may die at exit
    return *m;
  }
  static std::vector<Block*>& pool() {
    static auto* p = new std::vector<Block*>;
    return *p;
  }
  static size_t& pooled_bytes() {
    static size_t bytes = 0;
    return bytes;
  }

  static Block* take(size_t capacity) {
    std::lock_guard<std::mutex> guard(lock());
    std::vector<Block*>& p = pool();
    for (size_t i = 0; i < p.size(); ++i) {
      if (p[i]->capacity == capacity) {
        Block* b = p[i];
        p.erase(p.begin() + static_cast<std::ptrdiff_t>(i));
        pooled_bytes() -= capacity;
        return b;
      }
    }
    return nullptr;
  }

  static Block* map(size_t capacity) {
    const size_t length = capacity + kHugePage;  // room to align to a huge page
    void* base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return nullptr;
    void* data = reinterpret_cast<void*>(round_up(reinterpret_cast<uintptr_t>(base), kHugePage));
    madvise(data, capacity, MADV_HUGEPAGE);  // advice only: failure leaves 4 KiB pages
    return new Block{base, length, data, capacity};
  }

  static void release(void* ctx) {
    Block* b = static_cast<Block*>(ctx);
    {
      std::lock_guard<std::mutex> guard(lock());
      std::vector<Block*>& p = pool();
      if (p.size() < kPoolBlocks && pooled_bytes() + b->capacity <= kPoolBytes) {
        p.push_back(b);
        pooled_bytes() += b->capacity;
        return;
      }
    }
    munmap(b->base, b->length);
    delete b;
  }
};

PooledAllocator& pooled_allocator() {
  static auto* a = new PooledAllocator;
  return *a;
}

}  // namespace

at::Tensor empty_buffer(const at::Tensor& like) {
  const int64_t bytes = like.numel() * static_cast<int64_t>(like.element_size());
#ifdef __SANITIZE_ADDRESS__
  // Under AddressSanitizer (make sanitize) every buffer comes from the usual allocator, whose
  // blocks it guards: a kernel writing past a pooled block would go unseen.
  constexpr bool kPool = false;
#else
  constexpr bool kPool = true;
#endif
  if (!kPool || !like.device().is_cpu() || bytes < kPooledMinBytes)
    return at::empty_like(like, at::MemoryFormat::Contiguous);
  return at::detail::empty_generic(like.sizes(), &pooled_allocator(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   like.scalar_type(), c10::MemoryFormat::Contiguous);
}

}  // namespace host
}  // namespace sparseprune

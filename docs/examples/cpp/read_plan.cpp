// read_plan.cpp: read a dynsel plan directory from C++17 with no dependencies (POSIX mmap).
//
// Build:  g++ -O2 -std=c++17 -Wall -Wextra -o read_plan docs/examples/cpp/read_plan.cpp
// Usage:  read_plan PLAN_DIR           per-epoch counts and the sha256 of indices.bin:
//                                        epoch 0 count 30000
//                                        ...
//                                        sha256 5f1c...
//         read_plan PLAN_DIR EPOCH     epoch EPOCH's sample ids, one per line, in training order
//                                      (the same bytes as PLAN_DIR/epochs/epoch-EEEE.txt)
//
// Before printing anything, both forms check the two files they read, indices.bin and offsets.bin:
// their sizes fit each other (offsets non-decreasing from 0 to the number of ids), and each file's size
// and sha256 equal what manifest.json records under "files". Any mismatch is one line on stderr naming
// the file, and exit status 2. Not checked: counts against the manifest's "counts", ids against
// "n_samples", and the files this reader does not read (weights.bin, epochs/, plan.parquet).
//
// The plan format (docs/formats.md, "Plan"):
//   indices.bin  all epochs' sample ids concatenated, little-endian; uint32 when manifest.json says
//                "index_dtype": "<u4", uint64 when it says "<u8"
//   offsets.bin  little-endian uint64, epochs + 1 entries (CSR): epoch e is
//                indices[offsets[e] .. offsets[e + 1])
//
// manifest.json is read with a minimal string search instead of a JSON parser, to stay
// dependency-free: "index_dtype", and "files" -> "indices.bin"/"offsets.bin" -> "bytes" and "sha256".
// That is safe for dynsel's manifests (JSON written by dynsel, where "index_dtype" is a top-level key
// whose value is the plain string "<u4" or "<u8", and each "files" entry is a flat object of a number
// and a hex string); a trainer that reads more of the manifest should use a real JSON library (e.g.
// nlohmann/json).
//
// Values are decoded byte by byte as little-endian, so the reader is right on big-endian hosts too;
// on little-endian hosts compilers turn the decode into a plain load.

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// A read-only memory map of a whole file (empty files map to an empty span: mmap refuses length 0).

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      int err = errno;
      ::close(fd_);
      throw std::runtime_error(path + ": " + std::strerror(err));
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        ::close(fd_);
        throw std::runtime_error(path + ": mmap: " + std::strerror(err));
      }
      data_ = static_cast<const unsigned char*>(p);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

std::uint64_t load_le(const unsigned char* p, int width) {
  std::uint64_t v = 0;
  for (int i = width - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---------------------------------------------------------------------------------------------
// SHA-256 (FIPS 180-4), small and unoptimised.

class Sha256 {
 public:
  void update(const unsigned char* data, std::size_t n) {
    total_ += n;
    while (n > 0) {
      std::size_t take = std::min<std::size_t>(n, 64 - fill_);
      std::memcpy(block_.data() + fill_, data, take);
      fill_ += take;
      data += take;
      n -= take;
      if (fill_ == 64) {
        compress(block_.data());
        fill_ = 0;
      }
    }
  }

  std::string hexdigest() {
    std::uint64_t bits = total_ * 8;
    unsigned char pad[72] = {0x80};
    std::size_t pad_len = (fill_ < 56) ? 56 - fill_ : 120 - fill_;
    for (int i = 0; i < 8; ++i) pad[pad_len + i] = static_cast<unsigned char>(bits >> (56 - 8 * i));
    update(pad, pad_len + 8);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (std::uint32_t word : h_)
      for (int shift = 28; shift >= 0; shift -= 4) out += hex[(word >> shift) & 0xf];
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress(const unsigned char* p) {
    static const std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (std::uint32_t(p[4 * i]) << 24) | (std::uint32_t(p[4 * i + 1]) << 16) |
             (std::uint32_t(p[4 * i + 2]) << 8) | std::uint32_t(p[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    h_[0] += a; h_[1] += b; h_[2] += c; h_[3] += d;
    h_[4] += e; h_[5] += f; h_[6] += g; h_[7] += h;
  }

  std::array<std::uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::array<unsigned char, 64> block_{};
  std::size_t fill_ = 0;
  std::uint64_t total_ = 0;
};

// ---------------------------------------------------------------------------------------------
// manifest.json: "index_dtype" and two "files" entries, found by string search (see the header comment).

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open (is this a dynsel plan directory?)");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

constexpr std::size_t npos = std::string::npos;
const char* const kSpace = " \t\r\n";

// The position of the first value (past the ':' and any blanks) of a key "key" at or after `from`, or
// npos. A quoted word followed by ':' is a key: a JSON string cannot hold an unescaped quote, so a
// string's contents (a class name, say) never match.
std::size_t find_value(const std::string& text, const std::string& key, std::size_t from = 0) {
  const std::string quoted = "\"" + key + "\"";
  for (std::size_t at = text.find(quoted, from); at != npos; at = text.find(quoted, at + 1)) {
    std::size_t colon = text.find_first_not_of(kSpace, at + quoted.size());
    if (colon != npos && text[colon] == ':') return text.find_first_not_of(kSpace, colon + 1);
  }
  return npos;
}

int index_width(const std::string& text, const std::string& manifest_path) {
  std::size_t open = find_value(text, "index_dtype");
  if (open == npos) throw std::runtime_error(manifest_path + ": no \"index_dtype\" key");
  if (text[open] != '"') open = npos;
  std::size_t close = (open == npos) ? open : text.find('"', open + 1);
  if (close == npos) throw std::runtime_error(manifest_path + ": malformed \"index_dtype\"");
  const std::string dtype = text.substr(open + 1, close - open - 1);
  if (dtype == "<u4") return 4;
  if (dtype == "<u8") return 8;
  throw std::runtime_error(manifest_path + ": unsupported index_dtype \"" + dtype + "\"");
}

// What the manifest records for one data file: "files": {NAME: {"bytes": N, "sha256": "HEX"}, ...}.
struct FileRecord {
  std::uint64_t bytes;
  std::string sha256;
};

FileRecord file_record(const std::string& text, const std::string& manifest_path, const std::string& name) {
  const std::runtime_error missing(manifest_path + ": no \"files\" entry with \"bytes\" and \"sha256\" for " + name);
  std::size_t files = find_value(text, "files");
  std::size_t open = (files == npos) ? npos : find_value(text, name, files);
  std::size_t close = (open == npos || text[open] != '{') ? npos : text.find('}', open);
  if (close == npos) throw missing;
  const std::string entry = text.substr(open, close - open);  // flat: no nested objects
  std::size_t bytes = find_value(entry, "bytes"), sha = find_value(entry, "sha256");
  if (bytes == npos || sha == npos || entry[sha] != '"') throw missing;
  std::size_t digits = entry.find_first_not_of("0123456789", bytes), sha_end = entry.find('"', sha + 1);
  if (digits == bytes || digits == npos || sha_end == npos) throw missing;
  return {std::stoull(entry.substr(bytes, digits - bytes)), entry.substr(sha + 1, sha_end - sha - 1)};
}

// The sha256 of a mapped file, after checking its size and hash against the manifest's record.
std::string check_file(const std::string& dir, const std::string& name, const MappedFile& file,
                       const FileRecord& want) {
  if (file.size() != want.bytes)
    throw std::runtime_error(dir + "/" + name + ": " + std::to_string(file.size()) + " bytes, manifest.json says " +
                             std::to_string(want.bytes) + " (modified or truncated); rebuild the plan");
  Sha256 sha;
  sha.update(file.data(), file.size());
  std::string got = sha.hexdigest();
  if (got != want.sha256)
    throw std::runtime_error(dir + "/" + name + ": checksum mismatch (sha256 " + got + ", manifest.json says " +
                             want.sha256 + "); rebuild the plan");
  return got;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s PLAN_DIR [EPOCH]\n", argv[0]);
    return 2;
  }
  try {
#ifdef READ_PLAN_SHA256_HOOK
    // Test hook, only in a build with -DREAD_PLAN_SHA256_HOOK: `read_plan --sha256 FILE` prints FILE's
    // sha256, so tests/test_example_readers.py can compare Sha256 with another implementation.
    if (argc == 3 && std::strcmp(argv[1], "--sha256") == 0) {
      MappedFile file(argv[2]);
      Sha256 sha;
      sha.update(file.data(), file.size());
      std::printf("%s\n", sha.hexdigest().c_str());
      return 0;
    }
#endif
    const std::string dir = argv[1];
    const std::string manifest_path = dir + "/manifest.json";
    const std::string manifest = read_text(manifest_path);
    const int width = index_width(manifest, manifest_path);
    const FileRecord indices_record = file_record(manifest, manifest_path, "indices.bin");
    const FileRecord offsets_record = file_record(manifest, manifest_path, "offsets.bin");
    MappedFile indices(dir + "/indices.bin");
    MappedFile offsets(dir + "/offsets.bin");

    if (indices.size() % width != 0 || offsets.size() % 8 != 0 || offsets.size() < 8)
      throw std::runtime_error(dir + ": indices.bin/offsets.bin have impossible sizes; rebuild the plan");
    const std::uint64_t n_indices = indices.size() / width;
    const std::size_t epochs = offsets.size() / 8 - 1;
    std::vector<std::uint64_t> off(epochs + 1);
    for (std::size_t e = 0; e <= epochs; ++e) off[e] = load_le(offsets.data() + 8 * e, 8);
    for (std::size_t e = 0; e < epochs; ++e)
      if (off[e] > off[e + 1]) throw std::runtime_error(dir + ": offsets.bin is not non-decreasing");
    if (off[0] != 0 || off[epochs] != n_indices)
      throw std::runtime_error(dir + ": offsets.bin does not span indices.bin; rebuild the plan");
    check_file(dir, "offsets.bin", offsets, offsets_record);
    const std::string indices_sha256 = check_file(dir, "indices.bin", indices, indices_record);

    if (argc == 3) {  // one epoch's ids, one per line
      char* end = nullptr;
      const unsigned long long e = std::strtoull(argv[2], &end, 10);
      if (*argv[2] == '\0' || *end != '\0' || e >= epochs) {
        std::fprintf(stderr, "epoch %s is not in this plan (it has %zu epochs)\n", argv[2], epochs);
        return 2;
      }
      for (std::uint64_t i = off[e]; i < off[e + 1]; ++i)
        std::printf("%llu\n", static_cast<unsigned long long>(load_le(indices.data() + i * width, width)));
      return 0;
    }

    for (std::size_t e = 0; e < epochs; ++e)
      std::printf("epoch %zu count %llu\n", e, static_cast<unsigned long long>(off[e + 1] - off[e]));
    std::printf("sha256 %s\n", indices_sha256.c_str());
    return 0;
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "read_plan: %s\n", ex.what());
    return 2;
  }
}

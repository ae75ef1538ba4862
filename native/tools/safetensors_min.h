// A small safetensors reader and writer for the standalone GPU benchmark (no Node there): the 8-byte
// little-endian header length, the JSON header (dtype, shape, data_offsets per tensor), the data.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace calib_tools {

struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // offsets into the data section
};

struct StFile {
  std::vector<StTensor> tensors;
  std::vector<uint8_t> data;
};

namespace detail {

struct Json {
  const std::string& s;
  size_t i = 0;
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  }
  void expect(char c) {
    ws();
    if (i >= s.size() || s[i] != c) throw std::runtime_error(std::string("safetensors header: expected '") + c + "'");
    ++i;
  }
  bool peek(char c) {
    ws();
    return i < s.size() && s[i] == c;
  }
  std::string str() {
    expect('"');
    std::string out;
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\') ++i;
      out += s[i++];
    }
    expect('"');
    return out;
  }
  int64_t num() {
    ws();
    size_t j = i;
    while (j < s.size() && (isdigit(static_cast<unsigned char>(s[j])) || s[j] == '-')) ++j;
    const int64_t v = std::stoll(s.substr(i, j - i));
    i = j;
    return v;
  }
  std::vector<int64_t> nums() {
    std::vector<int64_t> v;
    expect('[');
    while (!peek(']')) {
      v.push_back(num());
      if (peek(',')) ++i;
    }
    expect(']');
    return v;
  }
  void skip() {  // any value
    ws();
    if (peek('"')) {
      str();
    } else if (peek('{') || peek('[')) {
      const char open = s[i], close = open == '{' ? '}' : ']';
      int depth = 0;
      bool in_str = false;
      for (; i < s.size(); ++i) {
        if (in_str) {
          if (s[i] == '\\') ++i;
          else if (s[i] == '"') in_str = false;
        } else if (s[i] == '"') {
          in_str = true;
        } else if (s[i] == open) {
          ++depth;
        } else if (s[i] == close && --depth == 0) {
          ++i;
          return;
        }
      }
    } else {
      while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
    }
  }
};

}  // namespace detail

inline StFile read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  if (!f || n > (uint64_t(100) << 20)) throw std::runtime_error(path + ": not a safetensors file");
  std::string header(n, '\0');
  f.read(&header[0], std::streamsize(n));
  StFile out;
  detail::Json j{header};
  j.expect('{');
  while (!j.peek('}')) {
    StTensor t;
    t.name = j.str();
    j.expect(':');
    if (t.name == "__metadata__") {
      j.skip();
    } else {
      j.expect('{');
      while (!j.peek('}')) {
        const std::string key = j.str();
        j.expect(':');
        if (key == "dtype") t.dtype = j.str();
        else if (key == "shape") t.shape = j.nums();
        else if (key == "data_offsets") {
          const std::vector<int64_t> o = j.nums();
          if (o.size() != 2) throw std::runtime_error(path + ": bad data_offsets");
          t.begin = uint64_t(o[0]), t.end = uint64_t(o[1]);
        } else j.skip();
        if (j.peek(',')) ++j.i;
      }
      j.expect('}');
      out.tensors.push_back(t);
    }
    if (j.peek(',')) ++j.i;
  }
  f.seekg(0, std::ios::end);
  const uint64_t total = uint64_t(f.tellg());
  out.data.resize(total - 8 - n);
  f.seekg(std::streamoff(8 + n));
  f.read(reinterpret_cast<char*>(out.data.data()), std::streamsize(out.data.size()));
  for (const StTensor& t : out.tensors) {
    if (t.end < t.begin || t.end > out.data.size()) throw std::runtime_error(path + ": tensor " + t.name + " lies outside the file");
  }
  return out;
}

// Writes F16 tensors (raw little-endian bytes) named as given.
inline void write_safetensors_f16(const std::string& path, const std::vector<std::string>& names, int64_t rows, int64_t cols,
                                  const std::vector<const uint8_t*>& datas) {
  const uint64_t bytes = uint64_t(rows * cols * 2);
  std::string h = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) h += ",";
    h += "\"" + names[i] + "\":{\"dtype\":\"F16\",\"shape\":[" + std::to_string(rows) + "," + std::to_string(cols) +
         "],\"data_offsets\":[" + std::to_string(i * bytes) + "," + std::to_string((i + 1) * bytes) + "]}";
  }
  h += "}";
  while ((h.size() + 8) % 8) h += ' ';
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = h.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(h.data(), std::streamsize(n));
  for (const uint8_t* d : datas) f.write(reinterpret_cast<const char*>(d), std::streamsize(bytes));
  if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace calib_tools

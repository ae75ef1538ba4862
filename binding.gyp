{
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
    "cflags": ["-O3", "-ffp-contract=off", "-fno-fast-math", "-fvisibility=hidden"],
    "cflags_cc": ["-std=c++17", "-fexceptions"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"]
  },
  "targets": [
    {
      "target_name": "calibscope_kernels_avx2",
      "type": "static_library",
      "sources": ["native/core/kernels_avx2.cc"],
      "conditions": [["target_arch=='x64'", { "cflags": ["-mavx2", "-mfma", "-mf16c"] }]]
    },
    {
      "target_name": "calibscope_kernels_baseline",
      "type": "static_library",
      "sources": ["native/core/kernels_baseline.cc"]
    },
    {
      "target_name": "calibscope",
      "dependencies": ["calibscope_kernels_avx2", "calibscope_kernels_baseline"],
      "sources": [
        "<!@(node scripts/gyp-sources.js native/core native/encoder native/addon)",
        "<!@(node scripts/build-cuda.js --sources)"
      ],
      "defines": ["CALIBSCOPE_VERSION=\"<!(node -p \"require('./package.json').version\")\""],
      "libraries": ["<!@(node scripts/build-cuda.js --link)"],
      "ldflags": ["-pthread"]
    }
  ]
}

{
  "variables": {
    # 1 where Open MPI's mpicc is installed: then the optional MPI addon below is built too.
    "residual_mpi%": "<!(node scripts/mpi-config.mjs available)"
  },
  "targets": [
    {
      "target_name": "residual_native",
      "sources": [
        "native/addon.cc",
        "native/engine.cc",
        "native/allocator.cc",
        "native/tensor.cc",
        "native/tensor_js.cc",
        "native/napi_args.cc",
        "native/tensor_binding.cc",
        "native/conv.cc",
        "native/batchnorm.cc",
        "native/pooling.cc",
        "native/elementwise.cc",
        "native/linear_loss.cc",
        "native/channels.cc",
        "native/optimizer.cc",
        "native/optimizer_binding.cc",
        "native/elementwise_binding.cc",
        "native/channels_binding.cc",
        "native/pooling_binding.cc",
        "native/batchnorm_binding.cc",
        "native/linear_loss_binding.cc",
        "native/conv_binding.cc",
        "native/plan.cc",
        "native/plan_int8.cc",
        "native/plan_grouped.cc",
        "native/plan_binding.cc",
        "native/grouped_conv.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fopenmp", "-Wall", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "ldflags": ["-fopenmp"],
      "libraries": ["-ldnnl", "-fopenmp"]
    }
  ],
  "conditions": [
    ["residual_mpi==1", {
      "targets": [
        {
          "target_name": "residual_mpi",
          "sources": ["native/mpi.cc"],
          "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "<!@(node scripts/mpi-config.mjs incdirs)"],
          "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS", "OMPI_SKIP_MPICXX"],
          "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "-Wall", "-Wno-unused-parameter"],
          "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
          "libraries": ["<!@(node scripts/mpi-config.mjs link)", "-ldl"]
        }
      ]
    }]
  ]
}

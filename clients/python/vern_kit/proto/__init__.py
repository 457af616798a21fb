"""The Python modules of proto/clean.proto and proto/control.proto (clean_pb2, control_pb2).

The build generates them next to this file in the build tree (clients/python/CMakeLists.txt:
protoc --python_out); run the tools from there (build/bin/vern-consume, build/bin/vern-controller)
or from the installed copy (/usr/share/vern/clients/python).
"""
try:
    from . import clean_pb2, control_pb2  # noqa: F401
except ImportError as e:  # the source tree: nothing generated here
    raise ImportError(
        "vern_kit.proto: the generated modules are missing; build the tree "
        "(cmake --build build --target vern_python) and run the kit from build/clients/python "
        "(build/bin/vern-consume, build/bin/vern-controller)") from e

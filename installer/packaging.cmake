# Install rules and CPack: a .deb (Debian 12) and a relocatable .tar.gz holding
#   bin/cetus, bin/cetus-cli
#   lib/cetus/libcetus-cuda.so          the CUDA plug-in, when the toolkit was found
#   share/cetus/models/<name>/          every resources/models/<name>/ with a config.json (not its recipe/)
#   share/applications/cetus.desktop, share/icons/hicolor/scalable/apps/cetus.svg
#   share/metainfo/io.cetus.Cetus.metainfo.xml
#   share/doc/cetus/copyright, LICENSE, changelog.gz
# Build them with installer/package.sh (or `cpack` in a configured build folder after
# building cetus and cetus-cli; packages land in <build>/packages/).
# Included from the top-level CMakeLists.txt; needs the targets of app/.
include(GNUInstallDirs)

# `install`/`cpack` do not build the whole tree (tests included) first: package.sh builds
# only the two binaries. Build before installing by hand.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)
# Folders created by install get 755 whatever the umask (Debian policy).
set(CMAKE_INSTALL_DEFAULT_DIRECTORY_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)

install(TARGETS cetus-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET cetus-cuda)
    # The CUDA plug-in: private, loaded at run time from <bindir>/../lib/cetus. It needs the
    # CUDA 13 cuBLAS libraries (NVIDIA's packages, not Debian's), found through its RUNPATH
    # (the toolkit's lib64) or the loader's paths; without them the engine says so and uses the CPU.
    install(TARGETS cetus-cuda LIBRARY DESTINATION lib/cetus)
    # dpkg-shlibdeps must see cuBLAS to read the plug-in; no package provides it, so no Depends.
    set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS "${CUDAToolkit_LIBRARY_DIR}")
endif()
if(TARGET cetus)
    install(TARGETS cetus RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
    install(FILES ${PROJECT_SOURCE_DIR}/resources/cetus.desktop
            DESTINATION ${CMAKE_INSTALL_DATADIR}/applications)
    install(FILES ${PROJECT_SOURCE_DIR}/resources/cetus.svg
            DESTINATION ${CMAKE_INSTALL_DATADIR}/icons/hicolor/scalable/apps)
    install(FILES ${PROJECT_SOURCE_DIR}/resources/io.cetus.Cetus.metainfo.xml
            DESTINATION ${CMAKE_INSTALL_DATADIR}/metainfo)
endif()
install(FILES ${PROJECT_SOURCE_DIR}/installer/deb/copyright ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/cetus)
# Debian wants the changelog gzipped reproducibly (-n: no name or time stamp).
find_program(CETUS_GZIP gzip)
if(CETUS_GZIP)
    execute_process(COMMAND ${CETUS_GZIP} -9nc ${PROJECT_SOURCE_DIR}/installer/deb/changelog
                    OUTPUT_FILE ${CMAKE_BINARY_DIR}/changelog.gz)
    install(FILES ${CMAKE_BINARY_DIR}/changelog.gz DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/cetus)
endif()

# The bundled model(s): found at configure time (package.sh always configures first).
# Training leftovers that may sit beside the shipped files are left out.
file(GLOB _cetus_model_candidates LIST_DIRECTORIES true CONFIGURE_DEPENDS
     ${PROJECT_SOURCE_DIR}/resources/models/*)
set(CETUS_BUNDLED_MODELS "")
foreach(_dir IN LISTS _cetus_model_candidates)
    if(IS_DIRECTORY ${_dir} AND EXISTS ${_dir}/config.json)
        get_filename_component(_name ${_dir} NAME)
        list(APPEND CETUS_BUNDLED_MODELS ${_name})
        install(DIRECTORY ${_dir}/
                DESTINATION ${CMAKE_INSTALL_DATADIR}/cetus/models/${_name}
                FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
                PATTERN recipe EXCLUDE
                PATTERN __pycache__ EXCLUDE
                PATTERN checkpoints EXCLUDE
                PATTERN runs EXCLUDE
                PATTERN ".*" EXCLUDE
                PATTERN "*.pt" EXCLUDE
                PATTERN "*.pth" EXCLUDE
                PATTERN "*.ckpt" EXCLUDE
                PATTERN "*.pyc" EXCLUDE
                PATTERN "*.log" EXCLUDE)
    endif()
endforeach()
if(CETUS_BUNDLED_MODELS)
    message(STATUS "Packaging: bundled model(s) ${CETUS_BUNDLED_MODELS}")
else()
    message(STATUS "Packaging: no bundled model (no resources/models/*/config.json)")
endif()

# ---- CPack -------------------------------------------------------------------------------
set(CPACK_GENERATOR "DEB;TGZ")
set(CPACK_PACKAGE_NAME cetus)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "Cetus developers")
set(CPACK_PACKAGE_CONTACT "Cetus Developer <dev@cetus.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Chat with DeepSeek-architecture models on your own computer")
set(CPACK_PACKAGE_DESCRIPTION
"Cetus is a desktop chat application (Qt 6) with its own engine for the
DeepSeek model family (DeepSeek-V2, V2-Lite, V3, R1, Moonlight): multi-head
latent attention, DeepSeekMoE routing and multi-token-prediction speculative
decoding, on the CPU or (with NVIDIA's CUDA 13 libraries) an NVIDIA GPU.
Live panels show the compressed KV cache, the experts
used and each token's routing. A small demo model of the DeepSeek-V3
architecture is included; cetus-cli inspects, runs and benchmarks models
from the command line.")
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/packages)
set(CPACK_PACKAGE_FILE_NAME "cetus-${PROJECT_VERSION}-linux-${CMAKE_SYSTEM_PROCESSOR}")
set(CPACK_STRIP_FILES ON)
set(CPACK_THREADS 0)

# .tar.gz: one top folder, relocatable (the binaries find ../share/cetus/models).
set(CPACK_ARCHIVE_COMPONENT_INSTALL OFF)

# .deb
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)            # cetus_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Shared-library dependencies: computed by dpkg-shlibdeps (dpkg-dev, part of build-essential)
# from the binaries; by hand (Debian 12 names) when it is missing.
find_program(CETUS_DPKG_SHLIBDEPS dpkg-shlibdeps)
set(_cetus_deb_depends "")
if(CETUS_DPKG_SHLIBDEPS)
    set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
    message(STATUS "Packaging: dpkg-shlibdeps not found, .deb dependencies declared by hand")
    set(_cetus_deb_depends
        "libc6 (>= 2.36), libstdc++6 (>= 12), libgcc-s1, libgomp1, libspdlog1.10, libfmt9, libpcre2-8-0, zlib1g")
    if(TARGET storage)
        string(APPEND _cetus_deb_depends ", libsqlite3-0 (>= 3.35)")
    endif()
    if(TARGET cetus)
        string(APPEND _cetus_deb_depends
               ", libqt6core6 (>= 6.4), libqt6gui6 (>= 6.4), libqt6widgets6 (>= 6.4), libqt6charts6 (>= 6.4)")
    endif()
endif()
if(TARGET cetus)
    # Loaded at run time, so dpkg-shlibdeps cannot see them: the X11 (xcb) platform plugin.
    # Wayland and the SVG icon plugin are optional (the icon is also drawn in code).
    if(_cetus_deb_depends)
        string(APPEND _cetus_deb_depends ", ")
    endif()
    string(APPEND _cetus_deb_depends "qt6-qpa-plugins")
    set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "qt6-wayland, libqt6svg6")
endif()
set(CPACK_DEBIAN_PACKAGE_DEPENDS "${_cetus_deb_depends}")

include(CPack)

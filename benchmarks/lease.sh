# Get a lent GPU machine ready for the full protocol in as few device seconds as possible.
#
#   bash benchmarks/lease.sh prepare [LA_ROOT]   # here, once per checkout: fills the ignored carry/ (~4 min)
#   source benchmarks/lease.sh setup             # there, at the start of every device call
#
# `prepare` packs the LA data into carry/la/part-00.npz (33 MiB) and part-01.npz (<= 62 MiB), puts the
# monai wheel and SimpleITK (its wheel repacked as tar.xz) into carry/wheels, and writes this checkout's
# commit to carry/commit, so that call 1 can carry carry/wheels, carry/commit and part-00 (<= 64 MiB) and
# call 2 part-01. `setup` installs the carried packages into $LEASE_SITE (/tmp/site; the machine's image has
# torch, numpy, scipy and h5py but not monai or SimpleITK), unpacks every carried part not unpacked yet into
# $LEASE_LA (/tmp/LA), and exports PYTHONPATH and BENCHMARK_COMMIT. Both keep what a warm machine already
# has. `setup` returns non-zero (and says why) when the packages are neither carried nor installed.
# LEASE_CARRY (carry/) names the folder of carried files.
LEASE_SITE=${LEASE_SITE:-/tmp/site}
LEASE_LA=${LEASE_LA:-/tmp/LA}
_lease_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LEASE_CARRY=${LEASE_CARRY:-$_lease_repo/carry}

lease_prepare() {
    local la_root=${1:-$_lease_repo/../shared/data/LA} carry=$LEASE_CARRY tmp
    [ -f "$la_root/train.list" ] || { echo "lease.sh: $la_root has no train.list (give the LA folder)" >&2; return 2; }
    mkdir -p "$carry/wheels" || return
    if [ ! -f "$carry/la/part-01.npz" ]; then
        python "$_lease_repo/benchmarks/carry_la.py" pack "$la_root" "$carry/la" --part-mib 33 62 || return
    fi
    local monai sitk
    monai=$(python -c "import monai; print(monai.__version__)") || return
    sitk=$(python -c "import SimpleITK; print(SimpleITK.Version_VersionString())") || return
    if [ ! -f "$carry/wheels/monai-$monai-py3-none-any.whl" ]; then
        pip download --quiet --no-deps "monai==$monai" -d "$carry/wheels" || return
    fi
    if [ ! -f "$carry/wheels/simpleitk-$sitk.tar.xz" ]; then
        tmp=$(mktemp -d) || return
        pip download --quiet --no-deps "SimpleITK==$sitk" -d "$tmp" &&
            python -m zipfile -e "$tmp"/simpleitk-*.whl "$tmp/sitk" &&
            tar cJf "$carry/wheels/simpleitk-$sitk.tar.xz.part" -C "$tmp/sitk" . &&
            mv "$carry/wheels/simpleitk-$sitk.tar.xz.part" "$carry/wheels/simpleitk-$sitk.tar.xz"
        local status=$?
        rm -rf "$tmp"
        [ $status -eq 0 ] || return $status
    fi
    git -C "$_lease_repo" rev-parse --short HEAD > "$carry/commit" || return
    du -sh "$carry"/la/* "$carry"/wheels/*
    echo "commit $(cat "$carry/commit"); call 1 carries carry/wheels, carry/commit, carry/la/part-00.npz"
}

lease_setup() {
    local carry=$LEASE_CARRY wheel archive part
    mkdir -p "$LEASE_SITE" || return
    for wheel in "$carry"/wheels/monai-*.whl; do
        [ -f "$wheel" ] && [ ! -d "$LEASE_SITE/monai" ] && { python3 -m zipfile -e "$wheel" "$LEASE_SITE" || return; }
    done
    for archive in "$carry"/wheels/simpleitk-*.tar.xz; do
        [ -f "$archive" ] && [ ! -d "$LEASE_SITE/SimpleITK" ] && { tar xJf "$archive" -C "$LEASE_SITE" || return; }
    done
    export PYTHONPATH=$LEASE_SITE:$_lease_repo/DTCTraining${PYTHONPATH:+:$PYTHONPATH}
    [ -f "$carry/commit" ] && export BENCHMARK_COMMIT=$(cat "$carry/commit")
    python3 -c "import monai, SimpleITK" 2>/dev/null ||
        { echo "lease.sh: monai or SimpleITK missing: carry carry/wheels (a cold machine lost $LEASE_SITE)" >&2; return 3; }
    for part in "$carry"/la/part-*.npz; do
        [ -f "$part" ] && { python3 "$_lease_repo/benchmarks/carry_la.py" unpack "$part" "$LEASE_LA" || return; }
    done
    echo "lease.sh: packages in $LEASE_SITE, LA cases in $LEASE_LA, commit ${BENCHMARK_COMMIT:-unknown}"
}

case "${1:-}" in
    prepare) shift; lease_prepare "$@" ;;
    setup) lease_setup ;;
    *) echo "usage: bash benchmarks/lease.sh prepare [LA_ROOT] | source benchmarks/lease.sh setup" >&2; false ;;
esac

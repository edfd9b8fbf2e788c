#!/usr/bin/env bash
# Downloads a Criteo dataset into data/raw/<dataset>/ (or $CCE_DATA_DIR/raw/<dataset>/).
#
#   scripts/download_criteo.sh criteo_kaggle
#   scripts/download_criteo.sh criteo_terabyte 0-23      # days: 0-23, 0-2,23, 7, ...
#   UNPACK=1 scripts/download_criteo.sh criteo_terabyte 23  # also gunzip (not needed)
#
# Downloads resume where they stopped (curl -C -) and are checked against the size the
# server announces. No published checksum of these files is known to this project, so none
# is checked; the gzip files' own CRCs are verified (gzip -t) instead. The preprocessing
# reads day_N.gz directly, so Terabyte days are kept compressed (a few hundred GB instead
# of 1.1 TB) unless UNPACK=1.
# Without network access (or if Criteo's site wants terms accepted in a browser) it prints
# what to download by hand and where to put it.
set -euo pipefail

DATASET="${1:-}"
DAYS="${2:-0-23}"
DATA_DIR="${CCE_DATA_DIR:-data}"
KAGGLE_URL="https://go.criteo.net/criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz"
KAGGLE_PAGE="https://ailab.criteo.com/ressources/"
TERABYTE_URL="https://storage.googleapis.com/criteo-cail-datasets"
TERABYTE_PAGE="https://ailab.criteo.com/download-criteo-1tb-click-logs-dataset/"

die() { echo "error: $*" >&2; exit 1; }

manual_kaggle() {
  cat >&2 <<EOF

Could not download the Criteo Kaggle archive automatically ($1).
Download it by hand:
  1. open $KAGGLE_PAGE ("Kaggle Display Advertising Challenge dataset"),
     accept Criteo's terms and download the archive (about 4.3 GB, dac.tar.gz or
     criteo-research-kaggle-display-advertising-challenge-dataset.tar.gz);
  2. unpack it:  tar -xzf <archive> train.txt
  3. put train.txt (about 11 GB, 45,840,617 lines) at:
       $DATA_DIR/raw/criteo_kaggle/train.txt
     (train.txt.gz also works);
  4. run:  make preprocess DATASET=criteo_kaggle
EOF
  exit 2
}

manual_terabyte() {
  cat >&2 <<EOF

Could not download Criteo Terabyte day $2 automatically ($1).
Download the days by hand from $TERABYTE_PAGE
(files day_0.gz .. day_23.gz) and put them, compressed or not, at:
  $DATA_DIR/raw/criteo_terabyte/day_N.gz   (or day_N)
then run:  make preprocess DATASET=criteo_terabyte
EOF
  exit 2
}

# remote_size URL -> the Content-Length the server announces (empty if none)
remote_size() {
  curl -sfIL --max-time 30 "$1" | tr -d '\r' | awk 'tolower($1)=="content-length:" {n=$2} END {print n}'
}

# fetch URL FILE: resumable download, then size check
fetch() {
  local url="$1" out="$2" size have
  size="$(remote_size "$url")" || return 1
  have=$(stat -c %s "$out" 2>/dev/null || echo 0)
  if [[ -n "$size" && "$have" == "$size" ]]; then
    echo "$out: already complete ($size bytes)"
    return 0
  fi
  echo "downloading $url -> $out${size:+ ($size bytes)}"
  curl -fL --retry 5 --retry-delay 10 -C - -o "$out" "$url" || return 1
  have=$(stat -c %s "$out")
  if [[ -n "$size" && "$have" != "$size" ]]; then
    die "$out has $have bytes but the server announced $size; run this again to resume"
  fi
  echo "$out: $have bytes (no published checksum is known for this file)"
}

expand_days() {  # "0-2,23" -> "0 1 2 23"
  local part lo hi out=()
  IFS=',' read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      lo=${BASH_REMATCH[1]}; hi=${BASH_REMATCH[2]}
    elif [[ "$part" =~ ^[0-9]+$ ]]; then
      lo=$part; hi=$part
    else
      die "cannot read days '$1' (use e.g. 0-23 or 0-2,23)"
    fi
    (( lo <= hi && hi <= 23 )) || die "days must be within 0..23, got '$1'"
    for ((d = lo; d <= hi; d++)); do out+=("$d"); done
  done
  echo "${out[@]}"
}

case "$DATASET" in
  criteo_kaggle)
    dir="$DATA_DIR/raw/criteo_kaggle"
    mkdir -p "$dir"
    if [[ -s "$dir/train.txt" || -s "$dir/train.txt.gz" ]]; then
      echo "$dir already has train.txt; nothing to download"
      exit 0
    fi
    command -v curl >/dev/null || manual_kaggle "curl is not installed"
    archive="$dir/criteo-kaggle.tar.gz"
    fetch "$KAGGLE_URL" "$archive" || manual_kaggle "no network access, or the server refused"
    if ! gzip -t "$archive" 2>/dev/null; then
      mv "$archive" "$archive.not-an-archive"
      manual_kaggle "the server sent something that is not the gzip archive (a terms page?)"
    fi
    echo "unpacking train.txt (about 11 GB)"
    rm -rf "$dir/.unpack"
    mkdir -p "$dir/.unpack"
    tar -xzf "$archive" -C "$dir/.unpack" train.txt
    mv "$dir/.unpack/train.txt" "$dir/train.txt"  # a rename: train.txt is never half-written
    rm -rf "$dir/.unpack"
    echo "done: $dir/train.txt ($(stat -c %s "$dir/train.txt") bytes); the archive can be deleted:"
    echo "  rm $archive"
    echo "next: make preprocess DATASET=criteo_kaggle"
    ;;
  criteo_terabyte)
    dir="$DATA_DIR/raw/criteo_terabyte"
    mkdir -p "$dir"
    command -v curl >/dev/null || manual_terabyte "curl is not installed" "$DAYS"
    days="$(expand_days "$DAYS")"  # exits here on a bad DAYS (set -e)
    for d in $days; do
      if [[ -s "$dir/day_$d" ]]; then
        echo "$dir/day_$d exists; skipped"
        continue
      fi
      gz="$dir/day_$d.gz"
      if [[ ! -s "$gz.verified" ]]; then
        fetch "$TERABYTE_URL/day_$d.gz" "$gz" || manual_terabyte "no network access, or the server refused" "$d"
        echo "checking the gzip CRC of $gz"
        gzip -t "$gz" || die "$gz is damaged (gzip -t failed); delete it and run this again"
        stat -c %s "$gz" > "$gz.verified"
      fi
      if [[ "${UNPACK:-0}" == 1 ]]; then
        echo "unpacking $gz"
        gzip -dc "$gz" > "$dir/day_$d.tmp" && mv "$dir/day_$d.tmp" "$dir/day_$d" && rm "$gz" "$gz.verified"
      fi
    done
    echo "next: make preprocess DATASET=criteo_terabyte"
    ;;
  *)
    die "usage: $0 criteo_kaggle | criteo_terabyte [DAYS, e.g. 0-23]"
    ;;
esac

#!/usr/bin/env bash
# How each method's cost grows with the model (issue 17 item 5): runs bench/methods.sh at
# 0.25, 1 and 4 GB per model (testdata/gen's 256mb, 1gb and 4gb configurations) and
# prints, per method, gomerge's wall and CPU seconds per GB of input read at each size,
# with the floor's, and the ratio of the per-GB CPU cost between the largest and the
# smallest size: near 1 is linear cost.
#
#   bench/scaling.sh [WORKDIR]        (default /tmp/gomerge-bench)
#
# Environment: SIZES (default "256mb 1gb 4gb"), REPS (default 1: the rounds of each
# size's methods.sh run; the table takes the median of the rounds), METHODS and THREADS
# as for methods.sh. At 4gb the fisher row is left out (methods.sh says why). The
# fixtures take 30 GB of disk at 4gb, and its 4-input rows need 17 GB of page cache.
set -euo pipefail
WORK=${1:-/tmp/gomerge-bench}
SIZES=${SIZES:-256mb 1gb 4gb}
export REPS=${REPS:-1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

for size in $SIZES; do
	"$HERE/methods.sh" "$size" "$WORK" >"$WORK/scaling-$size.md"
	cp "$WORK/out/methods-$size.tsv" "$WORK/scaling-$size.tsv"
	cat "$WORK/scaling-$size.md"
	echo
done

# One line per method and size: name size GB floor_wall gomerge_wall floor_cpu gomerge_cpu
# (medians of the rounds), then the table.
for size in $SIZES; do
	awk -F'\t' -v size="$size" '
		{ k = $1; gb[k] = $4 / 1e9; n[k]++; fw[k, n[k]] = $5; gw[k, n[k]] = $6; fc[k, n[k]] = $9; gc[k, n[k]] = $10; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
		function med(a, k, c,   i, j, t, v) {
			for (i = 1; i <= c; i++) v[i] = a[k, i]
			for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
			return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
		}
		END { for (i = 1; i <= m; i++) { k = order[i]; print k, size, gb[k], med(fw, k, n[k]), med(gw, k, n[k]), med(fc, k, n[k]), med(gc, k, n[k]) } }
	' "$WORK/scaling-$size.tsv"
done >"$WORK/scaling.lines"

first=${SIZES%% *}
last=${SIZES##* }
echo "Per GB of input read (wall s/GB and CPU s/GB, gomerge then floor), REPS=$REPS, $(cut -d' ' -f1-3 /proc/loadavg) load at the end"
echo
printf '| method |'
for size in $SIZES; do printf ' %s: input GB | wall s/GB | CPU s/GB | floor wall, CPU s/GB |' "$size"; done
printf ' CPU s/GB %s ÷ %s |\n|---|' "$last" "$first"
for size in $SIZES; do printf -- '---:|---:|---:|---:|'; done
printf -- '---:|\n'
awk -v sizes="$SIZES" '
	{ k = $1; if (!(k in seen)) { seen[k] = 1; order[++m] = k } gb[k, $2] = $3; fw[k, $2] = $4; gw[k, $2] = $5; fc[k, $2] = $6; gc[k, $2] = $7 }
	END {
		ns = split(sizes, s, " ")
		for (i = 1; i <= m; i++) {
			k = order[i]; line = "| " k " |"
			for (j = 1; j <= ns; j++) {
				z = s[j]
				if ((k, z) in gb) line = line sprintf(" %.2f | %.2f | %.2f | %.2f, %.2f |", gb[k, z], gw[k, z] / gb[k, z], gc[k, z] / gb[k, z], fw[k, z] / gb[k, z], fc[k, z] / gb[k, z])
				else line = line " - | - | - | - |"
			}
			a = s[1]; b = s[ns]
			if ((k, a) in gb && (k, b) in gb) line = line sprintf(" %.2f |", (gc[k, b] / gb[k, b]) / (gc[k, a] / gb[k, a]))
			else line = line " - |"
			print line
		}
	}' "$WORK/scaling.lines"

# plot-by-value.gnuplot - draws bench/bench-by-value's CSV: per migration, the continuity error
# and the inter-vCPU phase error of the by-offset handoff and of the by-value restore.
# gnuplot -e "csv='DATA.csv'; out='PLOT.svg'; subtitle='...'; phase_note='...'; value_title='...'; offset_title='...'" \
#     bench/plot-by-value.gnuplot
# CSV columns: run,mode,vcpus,guest_tsc_khz,continuity_ns,continuity_cycles,phase_cycles,
#              blackout_ns,anchor_width_ns,tsc_writes_matched,error_bound_ns
if (!exists("csv")) csv = 'by-value-vs-offset.csv'
if (!exists("out")) out = 'by-value-vs-offset.svg'
if (!exists("subtitle")) subtitle = ''
if (!exists("phase_note")) phase_note = ''
if (!exists("value_title")) value_title = "by value"
if (!exists("offset_title")) offset_title = "by offset"

set terminal svg size 900,620 dynamic font "sans,12" background "white"
set output out
set datafile separator ","
set multiplot layout 2,1 title "TSC across a migration: by offset (vcounterd) vs by value (KVM\\_SET\\_MSRS)\n{/*0.8 ".subtitle."}"

by_offset(col) = (strcol(2) eq "offset") ? column(col) : 1/0
by_value(col) = (strcol(2) eq "by-value") ? column(col) : 1/0
# Log axes cannot show 0 or a sign: plot |x|, and 0 at the floor given.
mag(x, floor) = abs(x) < floor ? floor : abs(x)

set logscale y 10
set format y "10^{%L}"
set grid ytics
set key outside right top vertical
set xlabel "migration"
set xtics 1 out nomirror
set mxtics 1
set offsets 0.5, 0.5, 0, 0
# The same plot area in both panels, the keys to its right.
set lmargin at screen 0.09
set rmargin at screen 0.74

set ylabel "|continuity error| (ns)"
set yrange [1:*]
# The blackout behind the by-value points: a by-value restore loses it (see bench/README.md).
# (Rows of one mode only: the other mode's rows would break the line.)
plot "< grep ',by-value,' ".csv using 1:8 with lines dt 2 lw 1.5 lc rgb "#999999" title "blackout (by value)", \
     csv every ::1 using 1:(mag(by_value(5), 1)) with points pt 9 ps 0.9 lc rgb "#c0392b" title value_title, \
     csv every ::1 using 1:(mag(by_offset(5), 1)) with points pt 7 ps 0.7 lc rgb "#1f6fb2" title offset_title

set ylabel "phase error (cycles)"
set yrange [0.5:*]
set label 1 phase_note at graph 0.02, graph 0.08 textcolor rgb "#1f6fb2"
plot csv every ::1 using 1:(mag(by_value(7), 1)) with points pt 9 ps 0.9 lc rgb "#c0392b" title "by value", \
     csv every ::1 using 1:(mag(by_offset(7), 1)) with points pt 7 ps 0.7 lc rgb "#1f6fb2" title "by offset"
unset multiplot

# plot-qemu-migration.gnuplot - draws bench/bench-qemu-migration's CSV: per live migration of a
# Linux guest, its wall-clock error afterwards and QEMU's downtime, Debian's QEMU (by value)
# against qemu-patch/'s QEMU with vcounterd (by offset).
# gnuplot -e "csv='DATA.csv'; out='PLOT.svg'; subtitle='...'" bench/plot-qemu-migration.gnuplot
# CSV columns: run,mode,rt_step_ns,rt_step_bound_ns,mono_err_ns,tsc_step_ms,downtime_ms,total_ms,
#              phase_after,master_clock,source_call_ms,target_call_ms,daemon_cpu_ms (vcounter rows)
if (!exists("csv")) csv = 'qemu-migration.csv'
if (!exists("out")) out = 'qemu-stock-vs-vcounterd.svg'
if (!exists("subtitle")) subtitle = ''

set terminal svg size 900,620 dynamic font "sans,12" background "white"
set output out
set datafile separator ","
set multiplot layout 2,1 title "A Linux guest's clocks across QEMU live migration: Debian's QEMU 7.2 vs QEMU + vcounterd\n{/*0.8 ".subtitle."}"

stock(col) = (strcol(2) eq "stock") ? column(col) : 1/0
vc(col) = (strcol(2) eq "vcounter") ? column(col) : 1/0
# Log axes cannot show 0 or a sign: plot |x|, and 0 at the floor given.
mag(x, floor) = abs(x) < floor ? floor : abs(x)

set grid ytics
set key outside right top vertical
set xlabel "migration"
set xtics 1 out nomirror
set offsets 0.5, 0.5, 0, 0
set lmargin at screen 0.09
set rmargin at screen 0.72

set logscale y 10
set format y "10^{%L}"
set ylabel "|wall-clock error| (ms)"
set yrange [0.001:*]
# The measurement's bound (the two pairings' half round trips) behind the points: a step inside
# it is indistinguishable from 0.
plot "< grep ',vcounter,' ".csv using 1:($4 / 1e6) with lines dt 2 lw 1.5 lc rgb "#999999" title "bound (vcounterd runs)", \
     csv every ::1 using 1:(mag(stock(3) / 1e6, 0.001)) with points pt 9 ps 0.9 lc rgb "#c0392b" title "Debian's QEMU (by value)", \
     csv every ::1 using 1:(mag(vc(3) / 1e6, 0.001)) with points pt 7 ps 0.7 lc rgb "#1f6fb2" title "QEMU + vcounterd (by offset)"

unset logscale y
set format y "%g"
set ylabel "QEMU downtime (ms)"
set yrange [0:*]
plot csv every ::1 using 1:(stock(7)) with linespoints pt 9 ps 0.9 lc rgb "#c0392b" title "Debian's QEMU", \
     csv every ::1 using 1:(vc(7)) with linespoints pt 7 ps 0.7 lc rgb "#1f6fb2" title "QEMU + vcounterd"
unset multiplot

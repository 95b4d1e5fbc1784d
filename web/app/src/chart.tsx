import { useEffect, useRef } from 'react';
import { BarController, BarElement, CategoryScale, Chart, ChartDataset, Legend, LinearScale, LineController, LineElement, PointElement, Tooltip } from 'chart.js';

Chart.register(LineController, LineElement, PointElement, BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

const COLORS = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2'];

/** A chart.js chart on a canvas (no inline styles; chart.js sizes the
 * canvas through the CSSOM). */
export function ChartBox({ type, labels, datasets, label, yTitle }: { type: 'line' | 'bar'; labels: string[]; datasets: { label: string; data: (number | null)[] }[]; label: string; yTitle?: string }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  useEffect(() => {
    if (!ref.current) return;
    chart.current = new Chart(ref.current, {
      type,
      data: { labels: [], datasets: [] },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle ?? '' } } },
        plugins: { legend: { display: true, position: 'bottom' } },
      },
    });
    return () => {
      chart.current?.destroy();
      chart.current = null;
    };
  }, [type, yTitle]);
  useEffect(() => {
    const c = chart.current;
    if (!c) return;
    c.data.labels = labels;
    c.data.datasets = datasets.map((d, i) => ({
      ...d,
      borderColor: COLORS[i % COLORS.length],
      backgroundColor: COLORS[i % COLORS.length] + (type === 'bar' ? 'cc' : '33'),
      pointRadius: 0,
      tension: 0,
      spanGaps: true,
    })) as ChartDataset<'line' | 'bar'>[] as never;
    c.update('none');
  }, [labels, datasets, type]);
  return (
    <div className="chart">
      <canvas ref={ref} role="img" aria-label={label} />
    </div>
  );
}

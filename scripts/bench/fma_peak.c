/* Per-core fp32 FMA peak: 12 independent chains of fused multiply-adds, enough to fill
 * both FMA pipes through their latency, so the loop runs at the core's issue rate. It
 * gives the ceiling that BENCHMARKS.md measures ONNX Runtime's convolutions against (the
 * VM's reported clock is not the clock the core runs at).
 *
 *   gcc -O2 -mavx512f -mfma -o /tmp/fma_peak scripts/bench/fma_peak.c && /tmp/fma_peak
 *   (/tmp/fma_peak & /tmp/fma_peak; wait)   # both cores busy at once
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(){
  __m512 a[12]; __m512 b=_mm512_set1_ps(1.0000001f), c=_mm512_set1_ps(1e-7f);
  for(int i=0;i<12;i++) a[i]=_mm512_set1_ps((float)i);
  long iters=200000000;
  for(int rep=0;rep<3;rep++){
  double t0=now();
  for(long n=0;n<iters;n++){
    #pragma GCC unroll 12
    for(int i=0;i<12;i++) a[i]=_mm512_fmadd_ps(a[i],b,c);
  }
  double t=now()-t0;
  float s=0; for(int i=0;i<12;i++) s+=_mm512_reduce_add_ps(a[i]);
  double flop=(double)iters*12*16*2;
  printf("avx512: %.1f GFLOP/s (%.3f s) %g\n", flop/t/1e9, t, s);
  }
  __m256 x[12]; __m256 y=_mm256_set1_ps(1.0000001f), z=_mm256_set1_ps(1e-7f);
  for(int i=0;i<12;i++) x[i]=_mm256_set1_ps((float)i);
  double t0=now();
  for(long n=0;n<iters;n++){
    #pragma GCC unroll 12
    for(int i=0;i<12;i++) x[i]=_mm256_fmadd_ps(x[i],y,z);
  }
  double t=now()-t0; float s=0; float o[8];
  for(int i=0;i<12;i++){_mm256_storeu_ps(o,x[i]); for(int j=0;j<8;j++) s+=o[j];}
  printf("avx2: %.1f GFLOP/s (%.3f s) %g\n", (double)iters*12*8*2/t/1e9, t, s);
}

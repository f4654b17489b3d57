#!/usr/bin/perl
# Rewrites one kernel file of the CUDA backend (.cu or .cuh) into C++ that the
# host compiler takes, for the CUDA emulator (include/cuda_emu.h):
#   kernel<<<grid, block, smem, stream>>>(args)
#       -> ::cuda_emu::Launch(grid, block, smem, stream).run(::cuda_emu::named(kernel, "kernel"), args)
#   launch_pdl(kernel, ...)        -> the kernel named the same way
#   extern __shared__ T name[];    -> T* name = the launch's dynamic shared memory
#   __shared__ T name[N];          -> a reference to the running block's storage for this declaration
#                                     (refilled with 0xA5, or 0xFF, for every block)
#   __CUDA_ARCH__                  -> CETUS_EMU_ARCH (900), inline PTX (asm volatile) -> nothing
# Usage: rewrite.pl in out
use strict;
use warnings;

my ($in, $out) = @ARGV;
open(my $fh, '<', $in) or die "rewrite.pl: cannot read $in: $!\n";
local $/;
my $s = <$fh>;
close $fh;

my $kernel = qr/[A-Za-z_]\w*(?:<[^<>;(){}]*>)?/;
$s =~ s/($kernel)\s*<<<(.*?)>>>\s*\(\s*(\)?)/
    "::cuda_emu::Launch($2).run(::cuda_emu::named($1, \"$1\")" . ($3 ? ")" : ", ")/gse;
$s =~ s/\blaunch_pdl\(\s*($kernel)\s*,/launch_pdl(::cuda_emu::named($1, "$1"),/g;
$s =~ s/extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+)\s+(\w+)\s*\[\s*\]\s*;/
    "$1* $2 = reinterpret_cast<$1*>(::cuda_emu::dynamic_smem());"/ge;
$s =~ s/__shared__[ \t]+(?:__align__\((\d+)\)[ \t]+)?([^;=\[\]\n]+?)[ \t]+(\w+)[ \t]*((?:\[[^\]\n]*\])*)[ \t]*;/
    "using $3_emu_type = $2$4; static const char $3_emu_site = 0; "
    . "auto& $3 = ::cuda_emu::shared_var<$3_emu_type, " . ($1 \/\/ 0) . ">(&$3_emu_site);"/ge;
$s =~ s/\b__CUDA_ARCH__\b/CETUS_EMU_ARCH/g;
$s =~ s/\basm\s+volatile\s*\((?:[^()]|\([^()]*\))*\)\s*;/((void)0);/g;

open(my $oh, '>', "$out.tmp") or die "rewrite.pl: cannot write $out: $!\n";
print $oh $s;
close $oh;
rename("$out.tmp", $out) or die "rewrite.pl: cannot write $out: $!\n";

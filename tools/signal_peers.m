% Times Octave's conv2 on the cases of `gconv bench signal`:
%   octave-cli --no-gui tools/signal_peers.m
% 1024x1024 double, 'same', kernels 3, 11, 31 square; median of 5 runs.
rand('state', 1);
a = rand(1024) - 0.5;
for k = [3 11 31]
  b = rand(k) - 0.5;
  conv2(a, b, 'same');
  t = zeros(1, 5);
  for i = 1:5
    tic; conv2(a, b, 'same'); t(i) = toc * 1e3;
  end
  printf('%3dx%-3d conv2 %8.1f ms\n', k, k, median(t));
end
